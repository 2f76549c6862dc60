"""The `openai` backend: any OpenAI-compatible chat server (`vllm serve`, `transformers serve`, hosted APIs).

Requests go out concurrently (a thread pool of `concurrency`), each with the `openai` client's own retries with
exponential backoff on connection errors, 408/409/429 and 5xx, and a per-request timeout. The API key is read from
the environment variable the backend config names and is never logged or stored. Constraints are passed the way
servers take them: a JSON schema as `response_format`, fixed choices as vLLM's `structured_outputs` (servers that
ignore them still get validated and retried by the stage). Scoring option log-probabilities needs prompt
log-probs, which the chat API does not offer: use the transformers or vLLM backend for `score_choices`.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from factory.errors import FactoryError
from factory.llm.types import Follow, GenerationRequest, GenerationResult, ScoreRequest, ScoreResult, in_rounds


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
    ):
        from openai import OpenAI

        key = os.environ.get(api_key_env) if api_key_env else None
        self.model_id = model
        self.revision = revision
        self.base_url = base_url
        self.concurrency = concurrency
        self.client = OpenAI(base_url=base_url, api_key=key or "not-needed", timeout=timeout_s, max_retries=max_retries)

    def _one(self, request: GenerationRequest) -> GenerationResult:
        import openai

        payload = request_payload(self.model_id, request)
        started = time.perf_counter()
        try:
            response = self.client.chat.completions.create(**payload)
        except openai.APIStatusError as exc:
            raise FactoryError(
                f"openai backend at {self.base_url}: HTTP {exc.status_code} ({str(exc.message)[:200]})"
            ) from None
        except openai.APIError as exc:  # connection errors and timeouts, after the client's retries
            raise FactoryError(f"openai backend at {self.base_url}: {type(exc).__name__} ({str(exc)[:200]})") from None
        return result_from(response, time.perf_counter() - started)

    def generate(self, requests: list[GenerationRequest], follow: Follow | None = None) -> list[GenerationResult]:
        return in_rounds(self._round, requests, follow)  # follow-ups (retries, next turns) in rounds

    def _round(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, requests))

    def score_choices(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        raise FactoryError(
            "the openai backend cannot score options (chat APIs give no prompt log-probs): use "
            "the transformers or vllm backend for logprob answers"
        )
