"""Stages used by the runner tests through the recipe's `module:attr` hook (tests/ is on sys.path).

`counter` writes `n_rows` rows in batches; each row's value comes from `ctx.rng(row)`, so the output does not
depend on how rows are split into batches. Knobs to exercise the runner: a per-batch sleep (to kill a build
mid-stage), a batch at which to raise (a crash), rows reported as failures, a prompt file to hash.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from pydantic import Field

from factory.options import BackendRef, DataFile, StageOptions, operational
from factory.stage import Columns, Needs, StageOutput

NOISE = 0.0  # added to every value: lets a test make a stage's output change under the same fingerprint


class CounterOptions(StageOptions):
    n_rows: int = Field(25, ge=0, description="rows to write")
    scale: float = Field(1.0, description="multiplies every value")
    fail_below: float = Field(0.0, description="rows whose value is below this are reported as failures")
    prompt: DataFile | None = Field(None, description="a file whose bytes enter the fingerprint")
    backend: BackendRef | None = Field(None, description="a backend (checked by the recipe, hashed by fingerprints)")
    sleep_s: float = operational(0.0, description="sleep per batch (to kill a build mid-stage)")
    crash_at_batch: int | None = operational(None, description="raise when this batch index runs")
    meet: list[str] = operational([], description="stages whose batches must run at the same time as this one's")
    rendezvous: str | None = operational(None, description="folder where the stages in `meet` sign in")


def counter_plan(options: CounterOptions, inputs, ctx):
    size = options.batch_size or 10
    return [[start, min(start + size, options.n_rows)] for start in range(0, options.n_rows, size)] or [[0, 0]]


def counter_run(options: CounterOptions, inputs, ctx):
    from datasets import Dataset, Features, Value

    start, end = ctx.batch
    if options.crash_at_batch is not None and ctx.batch_index == options.crash_at_batch:
        raise RuntimeError(f"boom at batch {ctx.batch_index}")
    offset = 0.0
    for ds in inputs.get("upstream", {}).values():  # a downstream counter adds the sum of its inputs' values
        offset += float(sum(ds["value"])) if "value" in ds.column_names else float(len(ds))
    rows, failures = [], []
    for i in range(start, end):
        value = float(ctx.rng(i).random()) * options.scale + offset + NOISE
        if value < options.fail_below:
            failures.append({"reason": "value below threshold", "row": i, "raw": f"{value:.6f}"})
            continue
        rows.append({"row": i, "value": value})
    time.sleep(options.sleep_s)
    if options.meet:
        _meet(options, ctx.stage)
    ctx.count("counted")  # through the context, as ctx.llm counts backend calls: once per batch, never twice
    features = Features({"row": Value("int64"), "value": Value("float64")})
    return StageOutput(Dataset.from_list(rows, features=features), failures, {"calls": 1})


def _meet(options: CounterOptions, stage: str, timeout: float = 60.0) -> None:
    """Sign in, then wait for every stage in `meet` to sign in too: passes only if they run at the same time."""
    from pathlib import Path

    folder = Path(options.rendezvous or ".")
    (folder / stage).touch()
    deadline = time.time() + timeout
    while not all((folder / other).exists() for other in options.meet):
        if time.time() > deadline:
            raise RuntimeError(f"{stage}: {sorted(options.meet)} never ran at the same time")
        time.sleep(0.05)


counter = SimpleNamespace(
    __doc__="Toy stage for runner tests.",
    VERSION=1,
    INPUTS={"upstream": Needs(optional=True, many=True, description="any datasets; their values are summed")},
    OUTPUTS={"data": Columns({"row": "int64", "value": "float64"})},
    Options=CounterOptions,
    plan=counter_plan,
    run=counter_run,
)


class NotAStage:
    pass


# --- stages with named roles, for the contract tests ------------------------------------------------------------
class JoinOptions(StageOptions):
    wrong_output: bool = Field(False, description="write a column the stage does not declare")
    extra_output: bool = Field(False, description="write an extra dataset the stage does not declare")


def join_run(options: JoinOptions, inputs, ctx):
    from datasets import Dataset

    total = sum(inputs["values"]["value"]) - sum(inputs["subtract"]["value"]) if "subtract" in inputs else 0.0
    upstream = ctx.upstream["values"]
    row = {"total": float(total), "values_from": upstream.name, "values_rows": upstream.manifest["rows"]}
    if options.wrong_output:
        row["surprise"] = 1
    extras = {"undeclared": Dataset.from_list([{"x": 1}])} if options.extra_output else {}
    return StageOutput([row], extras=extras)


join = SimpleNamespace(
    __doc__="Toy stage with two roles: values (needs row, value) and an optional subtract (needs value).",
    VERSION=1,
    INPUTS={"values": Needs("row", "value"), "subtract": Needs("value", optional=True)},
    OUTPUTS={"data": Columns({"total": "float64", "values_from": "string", "values_rows": "int64"})},
    Options=JoinOptions,
    run=join_run,
)


# --- a stage that asks a backend, for the engine lifetime tests ---------------------------------------------------
class AskOptions(StageOptions):
    backend: BackendRef = Field(..., description="the backend asked")
    n: int = Field(2, ge=1, description="questions")


def ask_run(options: AskOptions, inputs, ctx):
    from factory.llm.types import GenerationRequest, Sampling

    requests = [
        GenerationRequest.chat([{"role": "user", "content": f"q{i}"}], Sampling(max_tokens=4, seed=i))
        for i in range(options.n)
    ]
    with ctx.llm(options.backend) as llm:
        answers = llm.generate(requests)
    return StageOutput([{"question": i, "answer": a.text} for i, a in enumerate(answers)])


ask = SimpleNamespace(
    __doc__="Toy stage: `n` short questions to one backend.",
    VERSION=1,
    INPUTS={"upstream": Needs(optional=True, many=True, description="ignored: orders the stages")},
    OUTPUTS={"data": Columns({"question": "int64", "answer": "string"})},
    Options=AskOptions,
    run=ask_run,
)
