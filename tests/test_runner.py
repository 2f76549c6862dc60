"""Runner: caching, determinism, crash and kill resume, failures kept, stage selection."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import toy_stages
from conftest import factory_subprocess
from datasets import load_from_disk

from factory.errors import FactoryError, RecipeError
from factory.recipe import load_recipe
from factory.runner import Runner

RECIPE = """\
name: toy
seed: 3
stages:
  a: {uses: "toy_stages:counter", n_rows: 30, batch_size: 7}
  b: {uses: "toy_stages:counter", inputs: [a], n_rows: 4}
  c: {uses: "toy_stages:counter", n_rows: 3}
"""


def build(path, runs, *overrides, **kwargs):
    runner = Runner(load_recipe(path, list(overrides)), runs_dir=runs, progress=False)
    return runner, {s.stage: s for s in runner.build(**kwargs)}


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def recipe(write_recipe):
    return write_recipe(RECIPE)


def test_build_then_everything_is_cached(recipe, tmp_path):
    runner, first = build(recipe, tmp_path / "runs")
    assert {s.status for s in first.values()} == {"built"}
    assert first["a"].rows == 30 and first["b"].rows == 4
    store = runner.store("a")
    assert store.is_complete() and not store.partial_dir.exists()
    manifest = store.manifest()
    assert manifest["rows"] == 30 and manifest["batches"] == 5 and manifest["metrics"] == {"calls": 5.0, "counted": 5.0}
    assert manifest["seed"]["recipe"] == 3 and "datasets" in manifest["versions"]
    assert runner.store("b").manifest()["inputs"]["a"]["content_hash"] == store.marker()["content_hash"]
    ds = load_from_disk(str(store.data_dir))
    assert ds["row"] == list(range(30))

    _, second = build(recipe, tmp_path / "runs")
    assert {s.status for s in second.values()} == {"cached"}
    assert [s.state for s in runner.plan()] == ["cached"] * 3


def test_same_recipe_same_bytes_whatever_the_batch_size(recipe, tmp_path):
    r1, _ = build(recipe, tmp_path / "one")
    r2, _ = build(recipe, tmp_path / "two", "stages.a.batch_size=30")
    assert r1.fingerprints == r2.fingerprints
    for stage in ("a", "b", "c"):
        assert files_of(r1.store(stage).data_dir) == files_of(r2.store(stage).data_dir)


def test_bytes_do_not_depend_on_batching_at_scale(write_recipe, tmp_path):
    # 3,000 rows: more than one writer batch, so chunk boundaries would show in the bytes if they leaked
    text = "name: big\nstages:\n  a: {uses: 'toy_stages:counter', n_rows: 3000, batch_size: BS}\n"
    stores = []
    for bs in (3000, 701):
        path = write_recipe(text.replace("BS", str(bs)), f"big{bs}.yaml")
        runner, _ = build(path, tmp_path / f"runs{bs}")
        stores.append(runner.store("a"))
    assert files_of(stores[0].data_dir) == files_of(stores[1].data_dir)


def test_seed_changes_output(recipe, tmp_path):
    r1, _ = build(recipe, tmp_path / "one")
    r2, _ = build(recipe, tmp_path / "two", "seed=4")
    a1 = load_from_disk(str(r1.store("a").data_dir))["value"]
    a2 = load_from_disk(str(r2.store("a").data_dir))["value"]
    assert a1 != a2


def test_crash_keeps_finished_batches_and_resumes(recipe, tmp_path, cli):
    runs = tmp_path / "runs"
    result = cli("build", recipe, "stages.a.crash_at_batch=2", "--runs-dir", runs, "--no-progress")
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()
    assert len(line) == 1 and "stages.a: RuntimeError: boom at batch 2 (2/5 batches kept" in line[0]
    runner = Runner(load_recipe(recipe), runs_dir=runs, progress=False)
    status = runner.status("a")
    assert (status.state, status.batches_done, status.batches_total) == ("partial", 2, 5)
    assert (runner.store("a").dir / "error.log").read_text().count("boom") >= 1

    plan = cli("plan", recipe, "--runs-dir", runs)
    assert "partial" in plan.stdout and "2/5 batches done" in plan.stdout

    _, summary = build(recipe, runs)
    assert summary["a"].status == "resumed"
    assert runner.store("a").manifest()["resumed"] is True
    clean, _ = build(recipe, tmp_path / "clean")
    assert files_of(runner.store("a").data_dir) == files_of(clean.store("a").data_dir)
    assert not (runner.store("a").dir / "error.log").exists()


def test_killed_build_resumes_to_identical_output(recipe, tmp_path):
    runs = tmp_path / "runs"
    proc = factory_subprocess(
        "build", recipe, "stages.a.sleep_s=0.4", "--runs-dir", runs, "--no-progress", background=True
    )
    runner = Runner(load_recipe(recipe), runs_dir=runs, progress=False)
    deadline = time.time() + 120
    while len(runner.store("a").done_batches()) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "build made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = runner.store("a").done_batches()
    assert 2 <= len(done) < 5 and not runner.store("a").is_complete()

    resumed = factory_subprocess("build", recipe, "--runs-dir", runs, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout
    clean, _ = build(recipe, tmp_path / "clean")
    for stage in ("a", "b", "c"):
        assert files_of(runner.store(stage).data_dir) == files_of(clean.store(stage).data_dir)
    assert load_from_disk(str(runner.store("a").data_dir))["row"] == list(range(30))  # none lost, none twice


def test_failures_are_kept_with_reason(recipe, tmp_path):
    runner, summary = build(recipe, tmp_path / "runs", "stages.a.fail_below=0.3")
    store = runner.store("a")
    failures = load_from_disk(str(store.failures_dir))
    data = load_from_disk(str(store.data_dir))
    assert summary["a"].failures == len(failures) > 0
    assert len(failures) + len(data) == 30
    assert set(failures["reason"]) == {"value below threshold"}
    assert '"raw"' in failures[0]["record"]
    assert store.manifest()["failure_reasons"] == {"value below threshold": len(failures)}


def test_only_builds_named_stages(recipe, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(RecipeError, match=r"--only b needs 'a' built first"):
        build(recipe, runs, only=["b"])
    _, summary = build(recipe, runs, only=["a", "c"])
    assert set(summary) == {"a", "c"}
    _, summary = build(recipe, runs, only=["b"])
    assert set(summary) == {"b"} and summary["b"].status == "built"
    with pytest.raises(RecipeError, match=r"--only x: no such stage"):
        build(recipe, runs, only=["x"])


def test_from_rebuilds_stage_and_downstream(recipe, tmp_path):
    runs = tmp_path / "runs"
    build(recipe, runs)
    _, summary = build(recipe, runs, from_="a")
    assert summary["a"].status == "built" and summary["b"].status == "built" and summary["c"].status == "cached"


def test_force_recomputes_and_downstream_follows_changed_content(recipe, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runner, _ = build(recipe, runs)
    _, summary = build(recipe, runs, force=["a"])
    assert summary["a"].status == "built" and summary["b"].status == "cached"  # same bytes: b still valid

    monkeypatch.setattr(toy_stages, "NOISE", 1.0)  # a nondeterministic backend would do this
    _, summary = build(recipe, runs, force=["a"])
    assert summary["a"].status == "built"
    assert summary["b"].status == "built"  # a's content changed, so b was stale
    assert runner.status("b").state == "cached"


def test_stale_downstream_shows_in_plan(recipe, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runner, _ = build(recipe, runs)
    monkeypatch.setattr(toy_stages, "NOISE", 2.0)
    build(recipe, runs, only=["a"], force=["a"])
    assert runner.status("b").state == "stale" and "input a changed" in runner.status("b").detail


def test_dry_run_builds_nothing(recipe, tmp_path, cli):
    runs = tmp_path / "runs"
    result = cli("build", recipe, "--dry-run", "--runs-dir", runs)
    assert result.exit_code == 0 and "missing" in result.stdout
    assert not runs.exists() or not any(runs.rglob("_COMPLETE"))


def test_concurrent_build_of_same_stage_is_refused(recipe, tmp_path):
    from filelock import FileLock

    runner = Runner(load_recipe(recipe), runs_dir=tmp_path / "runs", progress=False)
    store = runner.store("a")
    store.dir.mkdir(parents=True)
    with FileLock(str(store.dir / ".lock")), pytest.raises(FactoryError, match="another build is writing"):
        runner.build(only=["a"])


def test_publish_block_publishes_at_the_end_of_build(write_recipe, tmp_path, cli):
    path = write_recipe(RECIPE + "publish: {profile: local, stages: [a, b]}\n")
    result = cli("build", path, "--runs-dir", tmp_path / "runs", "--no-progress")
    assert result.exit_code == 0 and "dataset toy: published v1" in result.stdout
    assert (tmp_path / "runs" / "toy" / "hub" / "datasets" / "toy" / "data" / "b").is_dir()


def test_stage_data_error_is_one_line_exit_2(write_recipe, tmp_path, cli):
    path = write_recipe("name: q\nstages:\n  q: {uses: questions, sets: [election], sample: 9}\n")
    result = cli("build", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: stages.q.sample: 9 requested but only 3 questions match the selection"


def test_summary_table_printed(recipe, tmp_path, cli):
    result = cli("build", recipe, "--runs-dir", tmp_path / "runs", "--no-progress")
    assert result.exit_code == 0
    for word in ("stage", "rows", "failures", "time", "cached?", "a", "b", "c"):
        assert word in result.stdout
    again = cli("build", recipe, "--runs-dir", tmp_path / "runs", "--no-progress")
    assert again.stdout.count("yes") == 3


def test_failure_text_with_unicode_line_separators_round_trips(tmp_path):
    import pyarrow as pa

    from factory.store import StageStore

    store = StageStore(tmp_path, "r", "s", "fp")
    store.partial_dir.mkdir(parents=True)
    raw = "garbage\u2028more\x1cand\x85\nlines"
    store.save_batch(0, pa.table({"x": [1]}), [{"reason": "invalid JSON", "raw": raw}], {})
    _, failures, _ = store.load_batch(0)
    assert failures == [{"reason": "invalid JSON", "raw": raw}]


def test_a_pool_line_refreshes_under_the_stage_bars_and_ends_finished():
    import itertools

    from rich.progress import Progress

    from factory.progress import PoolProgress, _Detail

    progress = Progress(_Detail(), disable=True)
    ticks = itertools.count()
    line = PoolProgress(progress, "votes · tiny", lambda: f"{next(ticks)} requests", every=0.01)
    time.sleep(0.2)
    line.close()
    task = progress.tasks[0]
    assert int(task.fields["pool"].split()[0]) > 2 and task.finished  # refreshed while it ran, then closed
    assert str(_Detail().render(task)) == task.fields["pool"]
