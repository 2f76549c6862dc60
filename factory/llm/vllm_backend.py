"""The `vllm` backend (extra `vllm`, GPU): vLLM's offline `LLM` engine, prefix caching, structured outputs (the
same xgrammar), a seed per request, tensor parallelism from the recipe (data parallelism is the Ray executor's
replicas: vLLM's offline engine has none).

The translation between our requests and vLLM's is pure functions, checked against the installed vLLM package by
`make test-vllm` (tests/test_vllm_api.py builds the real SamplingParams, StructuredOutputsParams and EngineArgs and
parses real RequestOutputs); the engine itself needs a GPU. Requests go to the engine `chunk_size` at a time, and
each chunk's answers reach the request cache when it returns. `score_choices` runs next-token steps with
`logprob_token_ids` (`factory.llm.option_steps`), never prompt log-probs.
"""

from __future__ import annotations

import json
import time
from typing import Any

from factory.llm import option_steps
from factory.llm.types import Follow, GenerationRequest, GenerationResult, ScoreRequest, ScoreResult, in_rounds


def sampling_kwargs(request: GenerationRequest) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams` for one request (structured outputs as a plain dict)."""
    s = request.sampling
    out: dict[str, Any] = {
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_tokens": s.max_tokens,
        "seed": (s.seed * 1_000_003 + request.sample_index) % (2**31),
        "n": 1,
    }
    if s.stop:
        out["stop"] = list(s.stop)
    c = request.constraint
    if c is not None and c.json_schema is not None:
        out["structured_outputs"] = {"json": json.loads(c.json_schema)}
    elif c is not None and c.choices is not None:
        out["structured_outputs"] = {"choice": list(c.choices)}
    return out


def step_kwargs(step: option_steps.Step) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams` for one scoring step: one greedy token, and the log-probs (over
    the whole vocabulary, before any sampling transform) of exactly the step's candidate tokens."""
    return {"max_tokens": 1, "temperature": 0.0, "logprob_token_ids": list(step.candidates)}


def engine_kwargs(config: Any, model: str) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` from a recipe's `VLLMConfig`."""
    out = {
        "model": model,
        "revision": config.revision,
        "dtype": config.dtype,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "enable_prefix_caching": config.enable_prefix_caching,
    }
    if config.max_model_len:
        out["max_model_len"] = config.max_model_len
    return out


def result_from(output: Any, seconds: float) -> GenerationResult:
    """A `vllm.RequestOutput` (one completion) as a GenerationResult."""
    completion = output.outputs[0]
    return GenerationResult(
        text=completion.text,
        finish_reason="length" if completion.finish_reason == "length" else "stop",
        prompt_tokens=len(output.prompt_token_ids or []),
        completion_tokens=len(completion.token_ids),
        seconds=seconds,
    )


def step_logprobs(output: Any) -> dict[int, float]:
    """token id -> log-prob at the first generated position of a `vllm.RequestOutput`."""
    first = output.outputs[0].logprobs[0]
    return {int(token): float(lp.logprob) for token, lp in first.items()}


class VLLMBackend:
    name = "vllm"

    def __init__(self, engine: Any, model_id: str, revision: str | None = None, chunk_size: int = 512):
        self.engine = engine
        self.model_id = model_id
        self.revision = revision
        self.chunk_size = chunk_size
        self.tokenizer = engine.get_tokenizer()

    @classmethod
    def start(cls, config: Any, model: str) -> VLLMBackend:
        from vllm import LLM

        return cls(LLM(**engine_kwargs(config, model)), model, config.revision, config.chunk_size)

    def close(self) -> None:
        """Stop the engine (its worker processes and GPU memory); the backend is unusable afterwards."""
        core = getattr(getattr(self.engine, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
        self.engine = None

    @staticmethod
    def _params(kwargs: dict[str, Any]):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        kwargs = dict(kwargs)
        if "structured_outputs" in kwargs:
            kwargs["structured_outputs"] = StructuredOutputsParams(**kwargs["structured_outputs"])
        return SamplingParams(**kwargs)

    def generate(self, requests: list[GenerationRequest], follow: Follow | None = None) -> list[GenerationResult]:
        return in_rounds(self._chunk, requests, follow, self.chunk_size)

    def _chunk(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        started = time.perf_counter()
        params = [self._params(sampling_kwargs(r)) for r in requests]
        outputs = self.engine.chat([r.message_dicts() for r in requests], params, use_tqdm=False)
        seconds = (time.perf_counter() - started) / max(len(requests), 1)
        return [result_from(o, seconds) for o in outputs]

    def score_choices(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return option_steps.score(requests, self.tokenizer, self._steps)

    def _steps(self, steps: list[option_steps.Step]) -> list[dict[int, float]]:
        prompts = [{"prompt_token_ids": list(s.tokens)} for s in steps]
        params = [self._params(step_kwargs(s)) for s in steps]
        return [step_logprobs(o) for o in self.engine.generate(prompts, params, use_tqdm=False)]
