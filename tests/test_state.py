"""Damaged state never wedges or poisons a build: concurrent builds, truncated checkpoints, unreadable plans,
markers and manifests, deleted or edited outputs. Each is rebuilt or named in one line; nothing finished is lost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import factory_subprocess
from datasets import load_from_disk
from test_runner import build, files_of

from factory.errors import FactoryError, RecipeError
from factory.recipe import load_recipe
from factory.runner import Runner

RECIPE = """\
name: toy
seed: 3
stages:
  a: {uses: "toy_stages:counter", n_rows: 30, batch_size: 6}
  b: {uses: "toy_stages:counter", inputs: [a], n_rows: 4}
"""


@pytest.fixture
def recipe(write_recipe):
    return write_recipe(RECIPE)


@pytest.fixture
def clean(recipe, tmp_path):
    runner, _ = build(recipe, tmp_path / "clean")
    return {s: files_of(runner.store(s).data_dir) for s in ("a", "b")}


def test_a_forced_second_build_never_deletes_a_running_builds_checkpoints(recipe, tmp_path, clean):
    runs = tmp_path / "runs"
    first = factory_subprocess(
        "build", recipe, "stages.a.sleep_s=0.3", "--runs-dir", runs, "--no-progress", background=True
    )
    runner = Runner(load_recipe(recipe), runs_dir=runs, progress=False)
    deadline = time.time() + 120
    while len(runner.store("a").done_batches()) < 1:
        assert first.poll() is None, first.communicate()
        assert time.time() < deadline, "build made no progress"
        time.sleep(0.05)
    for flags in ({"force": ["a"]}, {"from_": "a"}):
        with pytest.raises(FactoryError, match=r"stages\.a: another build is writing"):
            Runner(load_recipe(recipe), runs_dir=runs, progress=False).build(**flags)
        assert runner.store("a").done_batches()  # still there
    out, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    assert files_of(runner.store("a").data_dir) == clean["a"]


def test_a_truncated_or_unreadable_checkpoint_is_run_again(recipe, tmp_path, clean):
    runs = tmp_path / "runs"
    runner = Runner(load_recipe(recipe, ["stages.a.crash_at_batch=3"]), runs_dir=runs, progress=False)
    with pytest.raises(FactoryError):
        runner.build()
    store = runner.store("a")
    assert store.done_batches() == {0, 1, 2}
    rows = store.batch_dir(0) / "rows.arrow"
    rows.write_bytes(rows.read_bytes()[:40])  # truncated
    (store.batch_dir(1) / "meta.json").write_text("{not json")
    (store.partial_dir / "plan.json").write_text("")  # an empty plan file: planned again
    (store.partial_dir / "batch-oops").mkdir()  # a stray folder is ignored
    assert store.done_batches() == {2}
    _, summary = build(recipe, runs)
    assert summary["a"].status == "resumed"
    assert files_of(store.data_dir) == clean["a"] and files_of(runner.store("b").data_dir) == clean["b"]


@pytest.mark.parametrize(
    "damage, detail",
    [
        (lambda st: st.marker_path.write_text("\x00garbage"), "marker or manifest is unreadable"),
        (lambda st: st.manifest_path.write_text('["a list"]'), "marker or manifest is unreadable"),
        (lambda st: __import__("shutil").rmtree(st.data_dir), "data/ folder is missing"),
        (lambda st: next(st.data_dir.glob("*.arrow")).write_bytes(b"x"), "missing or changed size"),
        (lambda st: _flip_a_byte(next(st.data_dir.glob("*.arrow"))), "no longer matches the content hash"),
    ],
    ids=["marker", "manifest", "data-deleted", "data-truncated", "data-edited"],
)
def test_a_damaged_finished_output_is_reported_and_rebuilt_never_reused(recipe, tmp_path, clean, damage, detail):
    runs = tmp_path / "runs"
    runner, _ = build(recipe, runs)
    damage(runner.store("a"))
    fresh = Runner(load_recipe(recipe), runs_dir=runs, progress=False)
    states = {s.stage: s for s in fresh.plan()}  # plan never crashes on damage
    assert states["a"].state == "damaged" and detail in states["a"].detail
    assert states["b"].state == "stale"
    with pytest.raises(RecipeError, match=r"--only b needs 'a' built first"):
        fresh.build(only=["b"])
    _, summary = build(recipe, runs)
    assert summary["a"].status == "built"
    assert files_of(runner.store("a").data_dir) == clean["a"] and files_of(runner.store("b").data_dir) == clean["b"]


def test_publishing_a_damaged_stage_is_one_line(recipe, tmp_path):
    from factory.publish.push import publish_recipe

    runs = tmp_path / "runs"
    runner, _ = build(recipe, runs)
    next(runner.store("a").data_dir.glob("*.arrow")).unlink()
    with pytest.raises(FactoryError, match=r"publish: stage 'a' is damaged \(data/.* is missing or changed size\)"):
        publish_recipe(load_recipe(recipe), runs_dir=runs)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_build_reads_the_inputs_it_verified(recipe, tmp_path):
    """The cached input is hashed once per runner and reused; a rebuilt stage's data is loaded as saved."""
    runs = tmp_path / "runs"
    runner, _ = build(recipe, runs)
    assert load_from_disk(str(runner.store("a").data_dir))["row"] == list(range(30))
    again = Runner(load_recipe(recipe), runs_dir=runs, progress=False)
    again.plan()
    assert set(again._verified) == {"a", "b"}
