"""What the CLI shows: progress bars with rows/s and ETA on stderr, plan and summary tables on stdout."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

out = Console(highlight=False)
if not out.is_terminal:  # logs and CI: do not squeeze tables into 80 columns
    out = Console(highlight=False, width=160)
err = Console(stderr=True, highlight=False)


@dataclass
class StageSummary:
    stage: str
    fingerprint: str
    rows: int
    failures: int
    seconds: float
    status: str  # "built", "resumed", "cached"


class BatchProgress:
    """One bar per stage, advanced per finished batch; shows batches done, rows, rows/s and ETA."""

    def __init__(self, progress: Progress | None, stage: str, total: int, done: int, rows: int):
        self._progress = progress
        self.rows = rows
        self._started_rows = rows
        if progress is not None:
            self._task = progress.add_task(stage, total=total, completed=done, rows=rows, rate="")

    def advance(self, rows: int) -> None:
        self.rows += rows
        if self._progress is None:
            return
        task = self._progress.tasks[self._task]
        elapsed = task.elapsed or 0.0
        rate = (self.rows - self._started_rows) / elapsed if elapsed > 0 else 0.0
        self._progress.update(self._task, advance=1, rows=self.rows, rate=f"{rate:,.0f} rows/s")


class PoolProgress:
    """A line under the stage bars for a pool of engine replicas, refreshed twice a second from `read()` (e.g.
    "2/2 replicas busy · 120 requests · 3.1 req/s · 210 tok/s")."""

    def __init__(self, progress: Progress | None, label: str, read: Callable[[], str], every: float = 0.5):
        self._progress, self._read = progress, read
        self._stop = threading.Event()
        if progress is None:
            return
        self._task = progress.add_task(label, total=None, pool=read())
        self._thread = threading.Thread(target=self._tick, args=(every,), daemon=True, name=f"progress-{label}")
        self._thread.start()

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            self._progress.update(self._task, pool=self._read())  # type: ignore[union-attr]

    def close(self) -> None:
        if self._progress is None:
            return
        self._stop.set()
        self._thread.join()
        self._progress.update(self._task, pool=self._read(), total=1, completed=1)


class _Detail(ProgressColumn):
    """A stage's batches done, share, rows and rows/s; a pool's activity line."""

    def render(self, task: Task) -> Text:
        if "pool" in task.fields:
            return Text(task.fields["pool"])
        total = int(task.total or 0)
        share = f"{100 * task.completed / total:3.0f}%" if total else ""
        return Text(f"{int(task.completed)}/{total} batches {share} {task.fields['rows']:,} rows {task.fields['rate']}")


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        _Detail(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    )
    with progress:
        yield progress


def summary_table(rows: list[StageSummary]) -> Table:
    table = Table(title="build summary", title_justify="left")
    for col, justify in (
        ("stage", "left"),
        ("fingerprint", "left"),
        ("rows", "right"),
        ("failures", "right"),
        ("time", "right"),
        ("rows/s", "right"),
        ("cached?", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        rate = f"{r.rows / r.seconds:,.0f}" if r.seconds > 0 and r.status != "cached" else "-"
        table.add_row(
            r.stage,
            r.fingerprint,
            f"{r.rows:,}",
            f"{r.failures:,}",
            f"{r.seconds:.2f}s",
            rate,
            "yes" if r.status == "cached" else f"no ({r.status})",
        )
    return table


def plan_table(title: str, rows: list[tuple[str, str, str, str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("stage", "uses", "fingerprint", "status", "detail"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    return table
