"""The `vllm` backend (extra `vllm`, GPU): vLLM's offline `LLM` engine, prefix caching, structured outputs (the
same xgrammar), a seed per request, tensor/data parallelism from the recipe.

Written against vLLM's documented API (`LLM.chat`, `LLM.generate`, `SamplingParams`, `StructuredOutputsParams`).
The translation between our requests and vLLM's is pure functions, tested on CPU; the engine itself needs a GPU.
`score_choices` sends prompt + option as one token sequence with `prompt_logprobs=0` and sums the option's
prompt log-probs; prefix caching makes the shared prompt cheap.
"""

from __future__ import annotations

import json
import time
from typing import Any

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


def option_logprob(prompt_logprobs: list, option_ids: list[int]) -> float:
    """Sum of the log-probs of the last len(option_ids) prompt tokens (vLLM's `prompt_logprobs`, one dict per
    position mapping token id -> Logprob)."""
    tail = prompt_logprobs[-len(option_ids) :]
    return float(sum(step[t].logprob for step, t in zip(tail, option_ids)))


class VLLMBackend:
    name = "vllm"

    def __init__(self, config: Any, model: str):
        from vllm import LLM

        self.model_id = model
        self.revision = config.revision
        self.engine = LLM(**engine_kwargs(config, model))
        self.tokenizer = self.engine.get_tokenizer()

    @staticmethod
    def _params(kwargs: dict[str, Any]):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        kwargs = dict(kwargs)
        if "structured_outputs" in kwargs:
            kwargs["structured_outputs"] = StructuredOutputsParams(**kwargs["structured_outputs"])
        return SamplingParams(**kwargs)

    def generate(self, requests: list[GenerationRequest], follow: Follow | None = None) -> list[GenerationResult]:
        return in_rounds(self._round, requests, follow)  # follow-ups (retries, next turns) in rounds

    def _round(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        started = time.perf_counter()
        params = [self._params(sampling_kwargs(r)) for r in requests]
        outputs = self.engine.chat([r.message_dicts() for r in requests], params, use_tqdm=False)
        seconds = (time.perf_counter() - started) / max(len(requests), 1)
        return [result_from(o, seconds) for o in outputs]

    def score_choices(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        from vllm import SamplingParams

        prompts, spans = [], []
        for r in requests:
            prompt = self.tokenizer.apply_chat_template(r.message_dicts(), add_generation_prompt=True, tokenize=True)
            for option in r.options:
                ids = self.tokenizer.encode(option, add_special_tokens=False)
                prompts.append({"prompt_token_ids": list(prompt) + ids})
                spans.append(ids)
        started = time.perf_counter()
        outputs = self.engine.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
        seconds = (time.perf_counter() - started) / max(len(requests), 1)
        results, k = [], 0
        for r in requests:
            n = len(r.options)
            scores = [option_logprob(outputs[k + i].prompt_logprobs, spans[k + i]) for i in range(n)]
            results.append(ScoreResult(scores, [len(spans[k + i]) for i in range(n)], seconds))
            k += n
        return results
