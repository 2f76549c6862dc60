"""Runner overhead and resume cost, side by side with a plain script doing the same work.

    .venv/bin/python bench/runner_overhead.py [--rows 200000]

Prints three tables:
1. the `questions` stage (OpinionQA + personality sets) built by `factory` vs a bare script that loads the same
   sets and calls `save_to_disk`, and a cached rebuild;
2. per-batch checkpoint overhead: a synthetic stage writing N rows in 1, 10, 100 and 1,000 batches;
3. resume cost: a build crashed halfway, then resumed, vs building from scratch.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from pydantic import Field

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from tables import print_table  # noqa: E402

from factory.options import StageOptions, operational  # noqa: E402  (needs the sys.path line above)


class SyntheticOptions(StageOptions):
    n_rows: int = Field(100_000, ge=1)
    crash_at_batch: int | None = operational(None)


def _plan(options, inputs, ctx):
    size = options.batch_size or options.n_rows
    return [[s, min(s + size, options.n_rows)] for s in range(0, options.n_rows, size)]


def _run(options, inputs, ctx):
    import numpy as np
    from datasets import Dataset

    start, end = ctx.batch
    if ctx.batch_index == options.crash_at_batch:
        raise RuntimeError("planned crash")
    rows = np.arange(start, end)
    values = np.random.default_rng(ctx.derive_seed("values", start)).random(end - start)
    return Dataset.from_dict({"row": rows, "value": values, "text": [f"person {i}" for i in rows]})


synthetic = SimpleNamespace(
    __doc__="Synthetic rows for benchmarks.", VERSION=1, INPUTS=(0, 0), Options=SyntheticOptions, plan=_plan, run=_run
)


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _build(recipe_text: str, runs: Path, overrides=(), **kw):
    import yaml

    from factory.recipe import resolve, validate
    from factory.runner import Runner

    recipe = validate(resolve(yaml.safe_load(recipe_text), list(overrides)), base_dir=ROOT)
    return Runner(recipe, runs_dir=runs, progress=False).build(**kw)


def bench_questions(tmp: Path) -> None:
    from datasets import Dataset

    from factory.questions.sets import deduplicate, features, load_opinionqa, load_personality

    def bare():
        rows, _ = deduplicate(load_opinionqa() + load_personality())
        Dataset.from_list(rows, features=features()).save_to_disk(str(tmp / "bare"))
        return len(rows)

    recipe = "name: bench_q\nstages:\n  q: {uses: questions, sets: [opinionqa, personality]}\n"
    t_bare, n = _timed(bare)
    t_fresh, _ = _timed(lambda: _build(recipe, tmp / "runs_q"))
    t_cached, _ = _timed(lambda: _build(recipe, tmp / "runs_q"))
    print_table(
        "questions stage (opinionqa + personality)",
        ["run", "rows", "seconds", "vs bare"],
        [
            ["bare script (load + save_to_disk)", f"{n:,}", f"{t_bare:.2f}", "1.00x"],
            ["factory build, fresh", f"{n:,}", f"{t_fresh:.2f}", f"{t_fresh / t_bare:.2f}x"],
            ["factory build, cached", f"{n:,}", f"{t_cached:.3f}", f"{t_cached / t_bare:.3f}x"],
        ],
    )


def bench_batches(tmp: Path, n_rows: int) -> None:
    rows = []
    base = None
    for batches in (1, 10, 100, 1000):
        size = max(1, n_rows // batches)
        recipe = (
            f"name: bench_b\nstages:\n  s: {{uses: 'runner_overhead:synthetic', n_rows: {n_rows}, "
            f"batch_size: {size}}}\n"
        )
        t, _ = _timed(lambda recipe=recipe, batches=batches: _build(recipe, tmp / f"runs_b{batches}"))
        base = base or t
        rows.append(
            [
                f"{batches:,}",
                f"{size:,}",
                f"{t:.2f}",
                f"{n_rows / t:,.0f}",
                f"{(t - base) / max(batches - 1, 1) * 1000:.1f}" if batches > 1 else "-",
            ]
        )
    print_table(
        f"checkpoint overhead ({n_rows:,} synthetic rows)",
        ["batches", "rows/batch", "seconds", "rows/s", "ms per extra batch"],
        rows,
    )


def bench_resume(tmp: Path, n_rows: int) -> None:
    recipe = (
        f"name: bench_r\nstages:\n  s: {{uses: 'runner_overhead:synthetic', n_rows: {n_rows}, "
        f"batch_size: {n_rows // 20}}}\n"
    )
    t_full, _ = _timed(lambda: _build(recipe, tmp / "runs_full"))
    from factory.errors import StageError

    try:
        _build(recipe, tmp / "runs_res", ["stages.s.crash_at_batch=10"])
    except StageError:
        pass  # the planned crash: 10 batches are checkpointed
    t_resume, _ = _timed(lambda: _build(recipe, tmp / "runs_res"))
    print_table(
        "resume after a crash at batch 10 of 20",
        ["run", "seconds", "share of a full build"],
        [
            ["full build from scratch", f"{t_full:.2f}", "100%"],
            ["resume (10 batches left)", f"{t_resume:.2f}", f"{t_resume / t_full:.0%}"],
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    import datasets

    datasets.disable_progress_bars()
    tmp = Path(tempfile.mkdtemp(prefix="factory-bench-"))
    try:
        bench_questions(tmp)
        bench_batches(tmp, args.rows)
        bench_resume(tmp, args.rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
