"""The stage contract: a stage is options plus a function, `run(options, inputs, ctx) -> Dataset`.

A stage is a module (or any object) with these attributes; the runner does all storage, fingerprinting and
resume, and stages never touch the store:

- `Options`: a `StageOptions` subclass; every knob typed, defaulted and documented.
- `VERSION`: an int bumped whenever the stage's output for the same options changes.
- `INPUTS`: `(min, max)` number of upstream stages it reads (`max` may be None).
- `run(options, inputs, ctx)`: returns a `datasets.Dataset`, a list of row dicts, or a `StageOutput`
  (rows plus kept failures and metrics). `inputs` maps upstream stage names to their datasets.
- `summarize(options, outputs, ctx, artifacts_dir)` (optional): called once all batches are in, with every
  output dataset by name; writes plots into `artifacts_dir` and returns a dict stored in the manifest.
- `plan(options, inputs, ctx)` (optional): a list of JSON-serialisable batch descriptors. `run` is then called
  once per descriptor with `ctx.batch` set, each batch is checkpointed as it finishes, and a crashed build
  resumes at the first missing batch. Results must not depend on how work is split: draw randomness from
  `ctx.rng(row_key)`, never from a per-batch stream.

The module docstring's first line is the one-line description `factory ls` shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.options import StageOptions
from factory.seeds import derive_seed


@dataclass
class StageOutput:
    """What one run (or batch) of a stage produced: rows, rows that failed validation (kept, with a reason), metrics.

    `failures` rows must carry a `reason`; they are stored beside the dataset and counted in the manifest.
    `metrics` are numbers summed over batches (tokens in/out, requests, retries, ...).
    `extras` are further named datasets (a fidelity report...), concatenated over batches and saved beside `data`.
    """

    data: Any
    failures: list[dict] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageSpec:
    """A resolved stage implementation."""

    uses: str
    version: int
    options: type[StageOptions]
    run: Callable[..., Any]
    plan: Callable[..., list[Any]] | None
    inputs: tuple[int, int | None]
    summary: str
    summarize: Callable[..., dict] | None = None
    files: Callable[..., list] | None = None  # built-in files (prompts) whose bytes enter the fingerprint


@dataclass
class StageContext:
    """What a stage may know about where and how it runs; picklable, so another executor can ship it."""

    recipe: str
    stage: str
    seed: int
    backends: dict[str, Any] = field(default_factory=dict)
    workdir: Path | None = None
    upstream: dict[str, dict[str, str]] = field(default_factory=dict)  # input name -> {"dir", "fingerprint"}
    batch: Any = None
    batch_index: int = 0
    num_batches: int = 1

    def derive_seed(self, *key: Any) -> int:
        return derive_seed(self.seed, *key)

    def rng(self, *key: Any):
        """A numpy Generator that depends only on the stage seed and `key` (a row id, a sample index...)."""
        import numpy as np

        return np.random.default_rng(self.derive_seed(*key))


def rows_dataset(rows: list[dict], features: Any) -> Any:
    """A `Dataset` of these rows with the declared columns (in their order; keys outside them are left out), also
    when there are no rows: an empty table keeps its schema."""
    from datasets import Dataset

    if not rows:
        return Dataset.from_dict({k: [] for k in features}, features=features)
    return Dataset.from_list([{k: r.get(k) for k in features} for r in rows], features=features)


def spec_from_object(uses: str, obj: Any) -> StageSpec:
    missing = [a for a in ("Options", "run") if not hasattr(obj, a)]
    if missing:
        raise TypeError(f"'{uses}' is not a stage: it lacks {', '.join(missing)}")
    if not (isinstance(obj.Options, type) and issubclass(obj.Options, StageOptions)):
        raise TypeError(f"'{uses}'.Options must subclass factory.options.StageOptions")
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return StageSpec(
        uses=uses,
        version=int(getattr(obj, "VERSION", 1)),
        options=obj.Options,
        run=obj.run,
        plan=getattr(obj, "plan", None),
        inputs=tuple(getattr(obj, "INPUTS", (0, None))),  # type: ignore[arg-type]
        summary=doc.splitlines()[0] if doc else "",
        summarize=getattr(obj, "summarize", None),
        files=getattr(obj, "files", None),
    )
