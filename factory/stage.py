"""The stage contract (v2): a stage is options plus a function, `run(options, inputs, ctx) -> Dataset`.

A stage is a module (or any object) with these attributes; the runner does all storage, fingerprinting and
resume, and stages never touch the store:

- `Options`: a `StageOptions` subclass (or a discriminated union of them); every knob typed, defaulted, documented.
- `VERSION`: an int bumped whenever the stage's output for the same options changes.
- `INPUTS`: named input roles and the columns each needs, `{"people": Needs("person_id", "weight"), ...}`
  (`Needs(..., optional=True)` for a role that may be left out); a function `inputs(options)` may refine the
  needed columns by options (the roles stay those of `INPUTS`). A recipe names roles
  (`inputs: {people: calibrated, questions: election}`) or lists stages where the roles are unambiguous;
  `factory validate` checks every role against what the upstream stage declares it writes.
- `OUTPUTS`: the datasets it writes and their columns, `{"data": Columns({"person_id": "string", ...}), ...}`
  (`data` is the main one, other names are extra datasets), or a function `outputs(options)` returning that
  mapping. The runner checks every batch against it; `rows_dataset(rows, OUTPUTS["data"])` builds a batch.
- `run(options, inputs, ctx)`: returns a `datasets.Dataset`, a list of row dicts, or a `StageOutput`
  (rows plus kept failures, metrics and extra datasets). `inputs` maps role names to datasets (an optional role
  that was not wired is absent).
- `summarize(options, outputs, ctx, artifacts_dir)` (optional): called once all batches are in, with every
  output dataset by name; writes plots into `artifacts_dir` and returns a dict stored in the manifest.
- `plan(options, inputs, ctx)` (optional): a list of JSON-serialisable batch descriptors. `run` is then called
  once per descriptor with `ctx.batch` set, each batch is checkpointed as it finishes, and a crashed build
  resumes at the first missing batch. Results must not depend on how work is split: draw randomness from
  `ctx.rng(row_key)`, never from a per-batch stream.
- `files(options)` (optional): built-in files (prompts) whose bytes enter the fingerprint.

What a stage needs from around it comes through `ctx`: `ctx.llm(name)` opens a recipe backend behind the stage's
request cache (and records its calls), `ctx.upstream[role]` describes a finished input (`.fingerprint`,
`.manifest`, `.content_hash`, `.artifact(path)`), `ctx.cache_dir` is the recipe's cache shared across builds.

The module docstring's first line is the one-line description `factory ls` shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
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


class Needs:
    """An input role: the columns a stage reads from an upstream dataset.

    `optional`: the role may be left unwired. `many`: the role takes any number of inputs (none when optional);
    the stage then gets a dict of datasets by input name under the role, and `ctx.upstream[role]` a dict too.
    """

    __slots__ = ("columns", "optional", "many", "description")

    def __init__(self, *columns: str, optional: bool = False, many: bool = False, description: str = ""):
        self.columns = tuple(columns)
        self.optional = optional
        self.many = many
        self.description = description

    def __repr__(self) -> str:
        flags = "".join(f", {f}=True" for f in ("optional", "many") if getattr(self, f))
        return f"Needs({', '.join(map(repr, self.columns))}{flags})"


_VALUE_TYPES = {"string", "bool", "int8", "int16", "int32", "int64", "float32", "float64"}


class Columns:
    """The columns one output dataset declares, in order: name -> type.

    Types: 'string', 'bool', 'int8' to 'int64', 'float32', 'float64', 'list<T>' of one of those, 'label' (a
    ClassLabel whose names the stage decides) or 'any' (not checked). `open=True`: further columns may follow
    (attributes that depend on the data); the declared ones are always there.
    """

    __slots__ = ("types", "open")

    def __init__(self, types: dict[str, str], open: bool = False):
        for name, kind in types.items():
            inner = kind[5:-1] if kind.startswith("list<") and kind.endswith(">") else kind
            if inner not in _VALUE_TYPES and kind not in ("label", "any"):
                raise TypeError(f"column '{name}': unknown type '{kind}'")
        self.types = dict(types)
        self.open = open

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.types)

    def __iter__(self):
        return iter(self.types)

    def __repr__(self) -> str:
        return f"Columns({self.types!r}{', open=True' if self.open else ''})"

    def features(self) -> Any:
        """The `datasets.Features` of these columns (every type concrete)."""
        from datasets import Features, List, Value

        out = {}
        for name, kind in self.types.items():
            if kind in ("label", "any"):
                raise TypeError(f"column '{name}' has no concrete type ('{kind}'); build its features in the stage")
            out[name] = List(Value(kind[5:-1])) if kind.startswith("list<") else Value(kind)
        return Features(out)

    def mismatch(self, features: Any) -> str | None:
        """The first way `features` (of a written table) differs from this declaration, or None."""
        from datasets import ClassLabel, List, Sequence, Value

        for name, kind in self.types.items():
            if name not in features:
                return f"lacks column '{name}'"
            got = features[name]
            if kind == "any":
                continue
            if kind == "label":
                ok = isinstance(got, ClassLabel)
            elif kind.startswith("list<"):
                inner = getattr(got, "feature", None) if isinstance(got, (List, Sequence, list)) else None
                if isinstance(got, list) and got:
                    inner = got[0]
                ok = isinstance(inner, Value) and inner.dtype == kind[5:-1]
            else:
                ok = isinstance(got, Value) and got.dtype == kind
            if not ok:
                return f"column '{name}' is {got} (declared {kind})"
        if not self.open:
            extra = [c for c in features if c not in self.types]
            if extra:
                return f"has undeclared column '{extra[0]}'"
        return None


@dataclass(frozen=True)
class StageSpec:
    """A resolved stage implementation."""

    uses: str
    version: int
    options: Any  # a StageOptions subclass, or an Annotated discriminated union of them
    run: Callable[..., Any]
    plan: Callable[..., list[Any]] | None
    inputs: dict[str, Needs]  # the roles as declared (`INPUTS`)
    outputs: Callable[[Any], dict[str, Columns]]
    summary: str
    summarize: Callable[..., dict] | None = None
    files: Callable[..., list] | None = None  # built-in files (prompts) whose bytes enter the fingerprint

    roles_for: Callable[[Any], dict[str, Needs]] | None = None  # `inputs(options)`, when needs depend on options

    def roles(self, options: Any) -> dict[str, Needs]:
        """The input roles for these options (what `inputs(options)` returns, else `INPUTS`)."""
        return self.roles_for(options) if self.roles_for is not None else self.inputs

    def validate_options(self, raw: Any, context: dict) -> StageOptions:
        """The stage's options from a recipe mapping (pydantic's ValidationError on a mistake)."""
        if isinstance(self.options, type):
            return self.options.model_validate(raw, context=context)
        return _adapter(self.options).validate_python(raw, context=context)


@cache
def _adapter(annotation: Any) -> Any:
    """One TypeAdapter per union of option models (building one compiles a validator)."""
    from pydantic import TypeAdapter

    return TypeAdapter(annotation)


@dataclass
class StageContext:
    """What a stage may know about where and how it runs; picklable, so another executor can ship it."""

    recipe: str
    stage: str
    seed: int
    backends: dict[str, Any] = field(default_factory=dict)  # name -> validated backend config (factory.llm.config)
    workdir: Path | None = None  # scratch of this stage's build that survives a crash (request cache)
    cache_dir: Path | None = None  # the recipe's cache shared by every build (reference log-probs, hub inputs)
    upstream: dict[str, Any] = field(default_factory=dict)  # role -> its finished input (an Upstream; a dict for many)
    batch: Any = None
    batch_index: int = 0
    num_batches: int = 1
    metrics: dict[str, float] = field(default_factory=dict)  # counted by the context itself (backend calls)
    # backend name -> a pool of engine replicas an executor started for this stage (`factory.ray_pool.Pool`): its
    # `client(cache_path)` stands in for `llm.backend.load`. Empty for a local build; the executor sets it, so the
    # stage code is the same wherever it runs.
    llm_pools: dict[str, Any] = field(default_factory=dict)

    def derive_seed(self, *key: Any) -> int:
        return derive_seed(self.seed, *key)

    def rng(self, *key: Any):
        """A numpy Generator that depends only on the stage seed and `key` (a row id, a sample index...)."""
        import numpy as np

        return np.random.default_rng(self.derive_seed(*key))

    def count(self, key: str, by: float = 1.0) -> None:
        self.metrics[key] = self.metrics.get(key, 0.0) + float(by)

    @contextmanager
    def llm(self, name: str) -> Iterator[Any]:
        """The recipe backend `name` behind this stage's request cache (`requests.sqlite` in its work folder, so a
        resumed build replays what it already asked); its calls and cache hits are counted in the metrics and the
        cache is closed when the block ends. Under an executor with replica pools the same cache sits in front of
        the pool: cached requests never reach a replica."""
        from factory.llm.backend import load

        cache_path = Path(self.workdir) / "requests.sqlite" if self.workdir else None
        pool = self.llm_pools.get(name)
        client = pool.client(cache_path) if pool is not None else load(self.backends[name], cache_path)
        try:
            yield client
        finally:
            self.count("backend_calls", client.calls)
            if client.cache is not None:
                self.count("requests_cached", client.cache.hits)
                client.cache.close()


def rows_dataset(rows: list[dict], features: Any) -> Any:
    """A `Dataset` of these rows with the declared columns (in their order; keys outside them are left out), also
    when there are no rows: an empty table keeps its schema. `features` may be a `Columns` declaration."""
    from datasets import Dataset

    if isinstance(features, Columns):
        features = features.features()
    if not rows:
        return Dataset.from_dict({k: [] for k in features}, features=features)
    return Dataset.from_list([{k: r.get(k) for k in features} for r in rows], features=features)


def spec_from_object(uses: str, obj: Any) -> StageSpec:
    missing = [a for a in ("Options", "run", "INPUTS") if not hasattr(obj, a)]
    if not hasattr(obj, "OUTPUTS") and not hasattr(obj, "outputs"):
        missing.append("OUTPUTS")
    if missing:
        raise TypeError(f"'{uses}' is not a stage: it lacks {', '.join(missing)} (see factory/stage.py)")
    if not _options_type(obj.Options):
        raise TypeError(f"'{uses}'.Options must subclass factory.options.StageOptions (or be a union of them)")
    inputs = obj.INPUTS
    roles_for = getattr(obj, "inputs", None)
    if not isinstance(inputs, dict) or not all(isinstance(n, Needs) for n in inputs.values()):
        raise TypeError(f"'{uses}'.INPUTS must map role names to Needs(...) (stage contract v2)")
    declared = getattr(obj, "outputs", None) or getattr(obj, "OUTPUTS", None)
    outputs = declared if callable(declared) else (lambda options, _d=declared: _d)
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return StageSpec(
        uses=uses,
        version=int(getattr(obj, "VERSION", 1)),
        options=obj.Options,
        run=obj.run,
        plan=getattr(obj, "plan", None),
        inputs=dict(inputs),
        outputs=outputs,
        summary=doc.splitlines()[0] if doc else "",
        summarize=getattr(obj, "summarize", None),
        files=getattr(obj, "files", None),
        roles_for=roles_for if callable(roles_for) else None,
    )


def _options_type(annotation: Any) -> bool:
    import typing

    if isinstance(annotation, type):
        return issubclass(annotation, StageOptions)
    args = [a for a in typing.get_args(annotation) if a is not None]
    if typing.get_origin(annotation) is typing.Annotated:
        return _options_type(args[0])
    return bool(args) and all(_options_type(a) for a in args)


def option_models(annotation: Any) -> list[type[StageOptions]]:
    """The StageOptions classes a stage's `Options` may validate into (one, or each member of a union)."""
    import typing

    if isinstance(annotation, type):
        return [annotation]
    out: list = []
    for a in typing.get_args(annotation):
        if isinstance(a, type) and issubclass(a, StageOptions):
            out.append(a)
        elif typing.get_args(a):
            out += option_models(a)
    return out
