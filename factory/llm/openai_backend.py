"""The `openai` backend: any OpenAI-compatible chat server (`vllm serve`, `transformers serve`, hosted APIs).

Requests go out concurrently (a thread pool of `concurrency`), each with the `openai` client's own retries with
exponential backoff on connection errors, 408/409/429 and 5xx, and a per-request timeout. The API key is read from
the environment variable the backend config names and is never logged or stored. Constraints are passed the way
servers take them: a JSON schema as `response_format`, fixed choices as vLLM's `structured_outputs` (servers that
ignore them still get validated and retried by the stage). Each answer goes to `follow` (and so to the request
cache) as soon as its response arrives: a crash loses only the requests in flight.

`score_choices` runs the next-token steps of `factory.llm.option_steps` through the completions endpoint: the
prompt as token ids (the chat template applied by the served model's tokenizer, loaded here from `tokenizer`),
one greedy token, and the log-probs of exactly the step's candidate tokens (vLLM's `logprob_token_ids`, keys as
`token_id:N` with `return_tokens_as_token_ids`). Prompt log-probs are not used: vLLM computes them without its
prefix cache. A server without these (hosted APIs, `transformers serve`) fails with one line.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from factory.errors import FactoryError
from factory.llm import option_steps
from factory.llm.types import Follow, GenerationRequest, GenerationResult, ScoreRequest, ScoreResult


def request_payload(model: str, request: GenerationRequest) -> dict:
    """The chat-completions arguments for one request (pure: tested without a server)."""
    s = request.sampling
    payload: dict = {
        "model": model,
        "messages": request.message_dicts(),
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_tokens": s.max_tokens,
        "seed": (s.seed * 1_000_003 + request.sample_index) % (2**31),
    }
    if s.stop:
        payload["stop"] = list(s.stop)
    c = request.constraint
    if c is not None and c.json_schema is not None:
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": json.loads(c.json_schema), "strict": True},
        }
    elif c is not None and c.choices is not None:
        payload["extra_body"] = {"structured_outputs": {"choice": list(c.choices)}}
    return payload


def step_payload(model: str, step: option_steps.Step) -> dict:
    """The completions arguments of one scoring step (vLLM's OpenAI-compatible server)."""
    return {
        "model": model,
        "prompt": list(step.tokens),
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": 1,
        "extra_body": {"logprob_token_ids": list(step.candidates), "return_tokens_as_token_ids": True},
    }


def step_answer(response) -> dict[int, float]:
    """candidate token id -> log-prob from a completions response to `step_payload`."""
    logprobs = response.choices[0].logprobs if response.choices else None
    top = logprobs.top_logprobs[0] if logprobs is not None and logprobs.top_logprobs else None
    if not top or not all(k.startswith("token_id:") for k in top):
        raise ValueError("no log-probs by token id in the response (logprob_token_ids, return_tokens_as_token_ids)")
    return {int(k.removeprefix("token_id:")): float(v) for k, v in top.items()}


def result_from(response, seconds: float) -> GenerationResult:
    choice = response.choices[0]
    usage = getattr(response, "usage", None)
    return GenerationResult(
        text=choice.message.content or "",
        finish_reason="length" if choice.finish_reason == "length" else "stop",
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        seconds=seconds,
    )


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        revision: str | None = None,
        tokenizer: str | None = None,
    ):
        from openai import OpenAI

        key = os.environ.get(api_key_env) if api_key_env else None
        self.model_id = model
        self.revision = revision
        self.base_url = base_url
        self.concurrency = concurrency
        self.tokenizer_name = tokenizer or model
        self._tokenizer = None
        self.client = OpenAI(base_url=base_url, api_key=key or "not-needed", timeout=timeout_s, max_retries=max_retries)

    def _call(self, create, payload: dict):
        """`create(**payload)` with the server's failures as one line."""
        import openai

        try:
            return create(**payload)
        except openai.APIStatusError as exc:
            raise FactoryError(
                f"openai backend at {self.base_url}: HTTP {exc.status_code} ({str(exc.message)[:200]})"
            ) from None
        except openai.APIError as exc:  # connection errors and timeouts, after the client's retries
            raise FactoryError(f"openai backend at {self.base_url}: {type(exc).__name__} ({str(exc)[:200]})") from None

    def _one(self, request: GenerationRequest) -> GenerationResult:
        started = time.perf_counter()
        response = self._call(self.client.chat.completions.create, request_payload(self.model_id, request))
        return result_from(response, time.perf_counter() - started)

    def generate(self, requests: list[GenerationRequest], follow: Follow | None = None) -> list[GenerationResult]:
        """Up to `concurrency` requests in flight; each answer is followed as it arrives (follow-ups join the
        queue). A failure cancels what has not started and raises; the answers already followed stay cached."""
        results: list[GenerationResult | None] = []
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            pending: dict = {}

            def submit(more: list[GenerationRequest]) -> None:
                for request in more:
                    pending[pool.submit(self._one, request)] = len(results)
                    results.append(None)

            submit(list(requests))
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        i = pending.pop(future)
                        results[i] = future.result()
                        if follow is not None:
                            submit(follow(i, results[i]))
            finally:
                for future in pending:
                    future.cancel()
        return results  # type: ignore[return-value]

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_name)
            except Exception as exc:
                raise FactoryError(
                    f"openai backend: scoring needs the served model's tokenizer; '{self.tokenizer_name}' did not "
                    f"load ({type(exc).__name__}); set the backend's `tokenizer` to its Hub id or folder"
                ) from None
        return self._tokenizer

    def score_choices(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return option_steps.score(requests, self.tokenizer, self._steps)

    def _steps(self, steps: list[option_steps.Step]) -> list[dict[int, float]]:
        create = self.client.completions.create
        try:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                responses = list(pool.map(lambda s: self._call(create, step_payload(self.model_id, s)), steps))
            return [step_answer(r) for r in responses]
        except (FactoryError, ValueError) as exc:
            why = str(exc).removeprefix(f"openai backend at {self.base_url}: ")
            raise FactoryError(
                f"openai backend at {self.base_url} cannot score options: {why}; logprob answers need a vLLM "
                "server (or the transformers or vllm backend)"
            ) from None
