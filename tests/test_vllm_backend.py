"""The vllm backend's translation to and from vLLM's API (the engine needs a GPU; a stand-in module records
what the backend would hand vLLM and answers in vLLM's output shapes)."""

from __future__ import annotations

import json
import sys
import types
from types import SimpleNamespace

import pytest

from factory.llm import vllm_backend
from factory.llm.config import VLLMConfig
from factory.llm.types import Constraint, GenerationRequest, Sampling, ScoreRequest


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


@pytest.fixture
def fake_vllm(monkeypatch):
    calls: dict = {}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class StructuredOutputsParams:
        def __init__(self, **kw):
            self.kw = kw

    class Tokenizer:
        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            return [1, 2, 3]

        def encode(self, text, add_special_tokens=False):
            return [10 + len(text), 20]

    class LLM:
        def __init__(self, **kw):
            calls["engine"] = kw

        def get_tokenizer(self):
            return Tokenizer()

        def chat(self, messages, params, use_tqdm):
            calls["chat"] = (messages, params)
            return [
                SimpleNamespace(
                    prompt_token_ids=[1, 2, 3],
                    outputs=[
                        SimpleNamespace(
                            text=json.dumps({"i": i}),
                            finish_reason="length" if i == 1 else "stop",
                            token_ids=[7] * (i + 1),
                        )
                    ],
                )
                for i in range(len(messages))
            ]

        def generate(self, prompts, params, use_tqdm):
            calls["generate"] = (prompts, params)
            lp = lambda v: SimpleNamespace(logprob=v)  # noqa: E731
            return [
                SimpleNamespace(
                    prompt_logprobs=[
                        None,
                        {2: lp(-0.1)},
                        {3: lp(-0.2)},
                        {p["prompt_token_ids"][-2]: lp(-1.0 * (k + 1))},
                        {20: lp(-0.5)},
                    ]
                )
                for k, p in enumerate(prompts)
            ]

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    sp = types.ModuleType("vllm.sampling_params")
    sp.StructuredOutputsParams = StructuredOutputsParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp)
    return calls


def test_generate_and_score_translate_both_ways(fake_vllm):
    backend = vllm_backend.VLLMBackend(VLLMConfig(model="m"), "m")
    assert fake_vllm["engine"]["enable_prefix_caching"] is True
    reqs = [
        GenerationRequest.chat(
            [{"role": "user", "content": f"q{i}"}], Sampling(seed=i), Constraint.one_of(["A"]) if i == 0 else None
        )
        for i in range(2)
    ]
    out = backend.generate(reqs)
    messages, params = fake_vllm["chat"]
    assert messages[0] == [{"role": "user", "content": "q0"}]
    assert params[0].kw["structured_outputs"].kw == {"choice": ["A"]} and "structured_outputs" not in params[1].kw
    assert [o.finish_reason for o in out] == ["stop", "length"] and out[1].completion_tokens == 2
    assert out[0].prompt_tokens == 3 and json.loads(out[1].text) == {"i": 1}

    scores = backend.score_choices([ScoreRequest.chat([{"role": "user", "content": "pick"}], ["A", "BB"])])
    prompts, params = fake_vllm["generate"]
    assert prompts[0]["prompt_token_ids"] == [1, 2, 3, 11, 20] and params.kw == {"max_tokens": 1, "prompt_logprobs": 0}
    assert scores[0].logprobs == pytest.approx([-1.5, -2.5]) and scores[0].token_counts == [2, 2]


def test_missing_vllm_is_one_clear_line(monkeypatch):
    from factory.errors import FactoryError
    from factory.llm import backend

    monkeypatch.setitem(sys.modules, "vllm", None)
    monkeypatch.setattr(backend, "_LOADED", {})
    with pytest.raises(FactoryError, match=r"needs the `vllm` extra"):
        backend.load(VLLMConfig(model="m"))
