"""Executors run a stage's batches. The runner owns storage; an executor only turns tasks into results.

A `BatchTask` is plain picklable data (the stage's registry name or hook, its options, input dataset paths and
the context), and `run_task` is a module-level function, so an executor can ship both to other processes or
machines (Ray, in its own module) and yield results as they finish, in any order; the runner checkpoints each
one as it arrives and reassembles them by index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from factory.options import StageOptions
from factory.stage import StageContext, StageOutput


@dataclass
class BatchTask:
    uses: str
    options: StageOptions
    inputs: dict[str, Any]  # input role -> saved dataset folder (a `many` role: input name -> folder)
    ctx: StageContext


@dataclass
class BatchResult:
    index: int
    table: Any  # pyarrow.Table, with the HF features in its schema metadata
    failures: list[dict] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)  # name -> pyarrow.Table


class Executor(Protocol):
    name: str

    def map(self, tasks: Iterable[BatchTask]) -> Iterator[BatchResult]:
        """Run tasks; yield each result as soon as it is done (order is free)."""
        ...


@lru_cache(maxsize=32)
def load_input(path: str) -> Any:
    from datasets import load_from_disk

    return load_from_disk(path)  # memory-mapped: cheap to open in every worker


def load_inputs(paths: dict[str, Any]) -> dict[str, Any]:
    """role -> dataset (for a `many` role: input name -> dataset), from role -> saved folder(s)."""
    return {
        role: {n: load_input(p) for n, p in path.items()} if isinstance(path, dict) else load_input(path)
        for role, path in paths.items()
    }


RESERVED_OUTPUTS = {"data", "failures", "work", "artifacts"}


def _table(data: Any, what: str) -> Any:
    from datasets import Dataset

    if isinstance(data, list):
        data = Dataset.from_list(data)
    if not isinstance(data, Dataset):
        raise TypeError(f"{what} must be a Dataset, a list of dicts or a StageOutput, not {type(data).__name__}")
    if data._indices is not None:  # a select()/shuffle() view: materialise it so the table holds exactly these rows
        data = data.flatten_indices()
    return data.data.table


def normalize_output(result: Any) -> tuple[Any, list[dict], dict[str, float], dict[str, Any]]:
    """Stage return value (Dataset, list of dicts, or StageOutput) -> (table, failures, metrics, extra tables)."""
    out = result if isinstance(result, StageOutput) else StageOutput(result)
    for i, row in enumerate(out.failures):
        if not isinstance(row, dict) or "reason" not in row:
            raise TypeError(f"failure {i} must be a dict with a 'reason'")
    extras = {}
    for name, data in out.extras.items():
        if name in RESERVED_OUTPUTS or not name.isidentifier():
            raise TypeError(f"extra output name '{name}' is reserved or not an identifier")
        extras[name] = _table(data, f"extra output '{name}'")
    return (
        _table(out.data, "a stage's output"),
        list(out.failures),
        {k: float(v) for k, v in out.metrics.items()},
        extras,
    )


def run_task(task: BatchTask, inputs: dict[str, Any] | None = None) -> BatchResult:
    """Run one batch; `inputs` (role -> dataset) when an executor shipped the data itself, else read from disk."""
    from factory import registry

    spec = registry.stage(task.uses)
    inputs = load_inputs(task.inputs) if inputs is None else inputs
    table, failures, metrics, extras = normalize_output(spec.run(task.options, inputs, task.ctx))
    for key, value in task.ctx.metrics.items():  # what the context counted (backend calls, cache hits)
        metrics[key] = metrics.get(key, 0.0) + value
    return BatchResult(task.ctx.batch_index, table, failures, metrics, extras)


class LocalExecutor:
    """Runs batches one after another in this process."""

    name = "local"

    def map(self, tasks: Iterable[BatchTask]) -> Iterator[BatchResult]:
        for task in tasks:
            yield run_task(task)
