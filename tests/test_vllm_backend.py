"""The vllm backend's translation that needs no vLLM install: sampling and engine arguments, and the scoring steps
(`factory.llm.option_steps`). The same translation against the real vllm package: tests/test_vllm_api.py."""

from __future__ import annotations

import sys

import pytest

from factory.llm import option_steps, vllm_backend
from factory.llm.config import VLLMConfig
from factory.llm.types import Constraint, GenerationRequest, Sampling


def test_sampling_and_engine_kwargs():
    req = GenerationRequest.chat(
        [{"role": "user", "content": "x"}],
        Sampling(0.8, 0.9, 64, ("END",), 5),
        Constraint.schema({"type": "object", "properties": {"a": {"type": "integer"}}}),
        sample_index=2,
    )
    kw = vllm_backend.sampling_kwargs(req)
    assert kw == {
        "temperature": 0.8,
        "top_p": 0.9,
        "max_tokens": 64,
        "seed": (5 * 1_000_003 + 2) % 2**31,
        "n": 1,
        "stop": ["END"],
        "structured_outputs": {"json": {"type": "object", "properties": {"a": {"type": "integer"}}}},
    }
    choice = vllm_backend.sampling_kwargs(
        GenerationRequest.chat([{"role": "user", "content": "x"}], constraint=Constraint.one_of(["A", "B"]))
    )
    assert choice["structured_outputs"] == {"choice": ["A", "B"]}
    cfg = VLLMConfig(model="m", tensor_parallel_size=2, max_model_len=4096, gpu_memory_utilization=0.8)
    assert vllm_backend.engine_kwargs(cfg, "m") == {
        "model": "m",
        "revision": None,
        "dtype": "auto",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.8,
        "enable_prefix_caching": True,
        "max_model_len": 4096,
    }


def test_option_steps_walk_the_options_token_trie():
    prompt = [1, 2]
    options = [[5, 6, 7], [5, 6, 8], [9]]  # two options share [5, 6], a third starts elsewhere
    steps = option_steps.plan(3, prompt, options)
    assert [(s.prefix, s.candidates) for s in steps] == [((), (5, 9)), ((5,), (6,)), ((5, 6), (7, 8))]
    assert steps[2].tokens == (1, 2, 5, 6) and {s.request for s in steps} == {3}
    assert option_steps.waves(steps) == [[0], [1, 2]]
    answers = [{5: -1.0, 9: -2.0}, {6: -0.5}, {7: -0.25, 8: -3.0}]
    assert option_steps.option_scores(options, steps, answers) == [-1.75, -4.5, -2.0]


def test_option_steps_split_wide_candidate_sets_and_name_missing_answers():
    options = [[t] for t in range(300)]
    steps = option_steps.plan(0, [1], options)
    assert [len(s.candidates) for s in steps] == [128, 128, 44]
    answers = [{t: -float(t) for t in s.candidates} for s in steps]
    assert option_steps.option_scores(options, steps, answers)[299] == -299.0
    answers[1].pop(200)
    with pytest.raises(ValueError, match=r"no log-prob for token\(s\) \[200\]"):
        option_steps.option_scores(options, steps, answers)


def test_missing_vllm_is_one_clear_line(monkeypatch):
    from factory.errors import FactoryError
    from factory.llm import backend

    monkeypatch.setitem(sys.modules, "vllm", None)
    monkeypatch.setattr(backend, "_LOADED", {})
    with pytest.raises(FactoryError, match=r"needs the `vllm` extra"):
        backend.load(VLLMConfig(model="m"))
