"""The vllm backend against the real `vllm` package (`make test-vllm`; marker `vllm_api`, left out of `make test`).

Every object the backend hands vLLM is built with vLLM's own classes (SamplingParams, StructuredOutputsParams,
EngineArgs), every engine call is checked against the installed `LLM` signatures (an autospec of `vllm.LLM`: the
engine itself needs a GPU), and answers are parsed from real RequestOutput/CompletionOutput objects. A keyword
vLLM renames or removes fails here.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import random
from unittest import mock

import pytest
import torch

from factory.llm import vllm_backend
from factory.llm.backend import CachedBackend
from factory.llm.cache import RequestCache
from factory.llm.config import VLLMConfig
from factory.llm.types import Constraint, GenerationRequest, Sampling, ScoreRequest

pytestmark = pytest.mark.vllm_api

SCHEMA = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}


def chat(text: str, **kw) -> GenerationRequest:
    return GenerationRequest.chat([{"role": "user", "content": text}], **kw)


REQUEST_KINDS = {
    "free text, stop strings, seed": chat("hi", sampling=Sampling(0.8, 0.9, 64, ("END", "\n\n"), 5), sample_index=2),
    "json schema": chat("age?", constraint=Constraint.schema(SCHEMA)),
    "fixed choice": chat("pick", constraint=Constraint.one_of(["A", "B", "C"])),
}


@pytest.mark.parametrize("kind", list(REQUEST_KINDS))
def test_every_request_kind_builds_real_sampling_params(kind):
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    request = REQUEST_KINDS[kind]
    params = vllm_backend.VLLMBackend._params(vllm_backend.sampling_kwargs(request))
    assert isinstance(params, SamplingParams)
    s = request.sampling
    assert (params.temperature, params.top_p, params.max_tokens, params.n) == (s.temperature, s.top_p, s.max_tokens, 1)
    assert params.seed == (s.seed * 1_000_003 + request.sample_index) % 2**31
    assert list(params.stop or []) == list(s.stop)
    structured = params.structured_outputs
    if request.constraint is None:
        assert structured is None
    else:
        assert isinstance(structured, StructuredOutputsParams)
        assert structured.json == (SCHEMA if request.constraint.json_schema else None)
        assert structured.choice == (list(request.constraint.choices) if request.constraint.choices else None)


def test_scoring_steps_build_real_sampling_params():
    from vllm import SamplingParams

    step = vllm_backend.option_steps.Step(0, (), (1, 2, 3), (7, 9))
    params = vllm_backend.VLLMBackend._params(vllm_backend.step_kwargs(step))
    assert isinstance(params, SamplingParams)
    assert params.max_tokens == 1 and params.temperature == 0.0 and params.logprob_token_ids == [7, 9]
    assert params.prompt_logprobs is None  # prompt log-probs would skip the prefix cache (vllm#23399)


def test_engine_kwargs_are_parameters_of_llm_or_engine_args():
    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    config = VLLMConfig(model="m", revision="abc", dtype="bfloat16", max_model_len=2048, tensor_parallel_size=2)
    kwargs = vllm_backend.engine_kwargs(config, "m")
    explicit = set(inspect.signature(LLM.__init__).parameters) - {"self", "kwargs"}
    engine_args = {f.name for f in dataclasses.fields(EngineArgs)}
    unknown = sorted(set(kwargs) - explicit - engine_args)
    assert not unknown, f"vllm.LLM takes none of {unknown}"
    args = EngineArgs(**kwargs)  # what LLM(**kwargs) builds before it loads anything
    assert (args.model, args.revision, args.dtype, args.max_model_len) == ("m", "abc", "bfloat16", 2048)
    assert args.tensor_parallel_size == 2 and args.enable_prefix_caching is True
    assert "data_parallel_size" not in kwargs  # the offline engine has no data parallelism: Ray replicas do it


# --- the backend over an engine with the real LLM signatures ------------------------------------------------------


def toy_logprob(tokens: tuple[int, ...], token: int) -> float:
    """A deterministic stand-in for a model's next-token log-prob (the real engine needs a GPU)."""
    return -((sum(tokens) * 31 + len(tokens) * 17 + token * 7) % 97) / 10 - 0.01


def request_output(i: int, prompt_ids: list[int], text: str, token_ids: list[int], logprobs=None, finish="stop"):
    from vllm.outputs import CompletionOutput, RequestOutput

    completion = CompletionOutput(
        index=0, text=text, token_ids=token_ids, cumulative_logprob=None, logprobs=logprobs, finish_reason=finish
    )
    return RequestOutput(
        request_id=str(i), prompt=None, prompt_token_ids=prompt_ids, prompt_logprobs=None, outputs=[completion],
        finished=True,
    )


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The tiny test model's tokenizer and chat template (its weights are not trained: no forward pass here)."""
    from tiny_model import build_tiny_model
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tok") / "m", train_steps=0))


@pytest.fixture
def engine(tokenizer):
    """An autospec of `vllm.LLM`: a call whose arguments the installed LLM would not take raises TypeError. It
    answers chat requests with the request's position and scoring steps with `toy_logprob`."""
    from vllm import LLM, SamplingParams
    from vllm.logprobs import Logprob

    llm = mock.create_autospec(LLM, instance=True)
    llm.get_tokenizer.return_value = tokenizer
    llm.calls = []

    def chat(messages, sampling_params, use_tqdm):
        llm.calls.append(len(messages))
        assert all(isinstance(p, SamplingParams) for p in sampling_params)
        return [
            request_output(i, [1, 2, 3], f"answer {m[-1]['content']}", [5] * (i + 1), finish="length" if i else "stop")
            for i, m in enumerate(messages)
        ]

    def generate(prompts, sampling_params, use_tqdm):
        out = []
        for i, (prompt, params) in enumerate(zip(prompts, sampling_params)):
            ids = tuple(prompt["prompt_token_ids"])
            assert params.max_tokens == 1 and not params.prompt_logprobs
            lps = {t: Logprob(toy_logprob(ids, t), rank=None) for t in params.logprob_token_ids}
            out.append(request_output(i, list(ids), "x", [0], logprobs=[lps]))
        return out

    llm.chat.side_effect = chat
    llm.generate.side_effect = generate
    return llm


def test_generation_goes_through_real_llm_chat_and_parses_request_outputs(engine):
    backend = vllm_backend.VLLMBackend(engine, "m")
    results = backend.generate(list(REQUEST_KINDS.values()))
    assert [r.text for r in results] == ["answer hi", "answer age?", "answer pick"]
    assert [r.finish_reason for r in results] == ["stop", "length", "length"]
    assert [r.completion_tokens for r in results] == [1, 2, 3] and results[0].prompt_tokens == 3


def test_scores_are_summed_token_logprobs_along_each_option(engine):
    backend = vllm_backend.VLLMBackend(engine, "m")
    tok = engine.get_tokenizer.return_value
    request = ScoreRequest.chat([{"role": "user", "content": "pick"}], ["Answer: A", "Answer: B", "maybe yes", "no"])
    [result] = backend.score_choices([request])
    prompt = vllm_backend.option_steps.chat_ids(tok, request.message_dicts())
    for option, score in zip(request.options, result.logprobs):
        ids = tok.encode(option, add_special_tokens=False)
        expected = sum(toy_logprob(tuple(prompt + ids[:j]), t) for j, t in enumerate(ids))
        assert score == pytest.approx(expected)
    assert result.token_counts == [len(tok.encode(o, add_special_tokens=False)) for o in request.options]


def test_options_differing_in_their_last_token_take_one_step_past_their_shared_tokens(engine):
    backend = vllm_backend.VLLMBackend(engine, "m")
    tok = engine.get_tokenizer.return_value
    options = ["Answer: A", "Answer: B"]
    a, b = (tok.encode(o, add_special_tokens=False) for o in options)
    assert len(a) == len(b) and a[:-1] == b[:-1]
    shared = len(a) - 1
    backend.score_choices([ScoreRequest.chat([{"role": "user", "content": "q"}], options)])
    steps = sum(len(call.args[0]) for call in engine.generate.call_args_list)
    assert steps == shared + 1 and engine.generate.call_count == 2  # the prompt-only step first, then the rest


def test_scores_do_not_depend_on_request_order(engine):
    backend = vllm_backend.VLLMBackend(engine, "m")
    options = ["Answer: A", "Answer: B", "yes no"]
    requests = [ScoreRequest.chat([{"role": "user", "content": f"q {i}"}], options[: 2 + i % 2]) for i in range(7)]
    first = {r: s.logprobs for r, s in zip(requests, backend.score_choices(requests))}
    shuffled = requests[:]
    random.Random(3).shuffle(shuffled)
    again = {r: s.logprobs for r, s in zip(shuffled, backend.score_choices(shuffled))}
    assert again == first


def test_answers_reach_the_cache_chunk_by_chunk(engine, tmp_path):
    """A crash loses at most the chunk in flight: the engine fails on its third call, the first two chunks are
    cached, and a rerun sends only what was not answered."""
    backend = vllm_backend.VLLMBackend(engine, "m", chunk_size=2)
    answer = engine.chat.side_effect

    def failing(messages, sampling_params, use_tqdm):
        if len(engine.calls) == 2:
            raise RuntimeError("CUDA error: an illegal memory access")
        return answer(messages, sampling_params, use_tqdm)

    engine.chat.side_effect = failing
    requests = [chat(f"q{i}") for i in range(6)]
    with pytest.raises(RuntimeError):
        CachedBackend(backend, RequestCache(tmp_path / "c.sqlite")).generate(requests)
    assert len(RequestCache(tmp_path / "c.sqlite")) == 4
    engine.chat.side_effect = answer
    rerun = CachedBackend(backend, RequestCache(tmp_path / "c.sqlite"))
    rerun.generate(requests)
    assert rerun.calls == 2 and engine.calls[-1] == 2


# --- on a GPU: the real engine ---------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the vLLM engine needs a CUDA GPU")
def test_real_engine_generates_scores_in_any_order_and_is_released():
    """The embedded SmolLM2-135M on vLLM: every request kind, order-free scores, and the engine gone after release."""
    from factory.llm import backend
    from factory.llm.models import embedded_model_path

    config = VLLMConfig(model=str(embedded_model_path()), max_model_len=2048, gpu_memory_utilization=0.3)
    client = backend.load(config)
    results = client.generate(list(REQUEST_KINDS.values()))
    assert results[2].text in ("A", "B", "C") and isinstance(json.loads(results[1].text)["age"], int)
    options = ["Answer: A", "Answer: B"]
    requests = [ScoreRequest.chat([{"role": "user", "content": f"Is {n} even?"}], options) for n in range(6)]
    first = client.score_choices(requests)
    again = client.score_choices(requests[::-1])[::-1]
    assert [r.logprobs for r in again] == pytest.approx([r.logprobs for r in first], abs=1e-3)
    assert backend.release(config) and config.model_dump_json() not in backend._LOADED
