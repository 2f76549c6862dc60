"""The runner unloads a backend's engine after the last stage that uses it: a build with two models one after the
other and a training stage holds at most one engine at a time (on CPU: live TransformersBackend objects)."""

from __future__ import annotations

import gc
import weakref

from factory.llm import backend
from factory.llm.transformers_backend import TransformersBackend
from factory.recipe import load_recipe
from factory.runner import Runner

RECIPE = """\
name: engines
seed: 0
backends:
  a: {{type: transformers, model: "{a}"}}
  b: {{type: transformers, model: "{b}"}}
stages:
  first: {{uses: "toy_stages:ask", backend: a}}
  second: {{uses: "toy_stages:ask", backend: b, inputs: [first]}}
  again: {{uses: "toy_stages:ask", backend: b, inputs: [second]}}
  pairs: {{uses: "fake_pairs:stage", n: 8, n_test: 2}}
  adapter:
    uses: train_dpo
    inputs: [pairs]
    model: "{a}"
    gradient_checkpointing: false
    dpo: {{max_steps: 1, per_device_train_batch_size: 2}}
"""


def test_two_models_then_training_hold_one_engine_at_a_time(tmp_path, tiny_path, monkeypatch):
    from tiny_model import build_tiny_model

    from factory.training import dpo

    other = build_tiny_model(tmp_path / "other", seed=1, train_steps=0)
    live: weakref.WeakSet = weakref.WeakSet()
    seen: list[tuple[str, int]] = []

    def count(when: str) -> None:
        gc.collect()
        seen.append((when, len(live)))

    init, load, train = TransformersBackend.__init__, backend.load, dpo.train

    def tracked_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        live.add(self)

    def tracked_load(config, cache_path=None):
        client = load(config, cache_path)
        count(f"loaded {config.model}")
        return client

    def tracked_train(*args, **kwargs):
        count("training")
        return train(*args, **kwargs)

    monkeypatch.setattr(TransformersBackend, "__init__", tracked_init)
    monkeypatch.setattr(backend, "load", tracked_load)
    monkeypatch.setattr(dpo, "train", tracked_train)
    monkeypatch.setattr(backend, "_LOADED", {})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(a=tiny_path, b=other))
    Runner(load_recipe(recipe), runs_dir=tmp_path / "runs", progress=False).build()
    assert seen == [(f"loaded {tiny_path}", 1), (f"loaded {other}", 1), (f"loaded {other}", 1), ("training", 0)]
    count("after the build")
    assert seen[-1] == ("after the build", 0) and backend._LOADED == {}
