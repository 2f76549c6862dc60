"""The backend interface and its requests and results, backend-independent.

    class Backend(Protocol):
        model_id, revision
        generate(requests: list[GenerationRequest], follow=None) -> list[GenerationResult]
        score_choices(requests: list[ScoreRequest]) -> list[ScoreResult]

`follow(i, result)`, when given, is called as each request finishes and returns follow-up requests (a retry, the
next turn of a conversation) that join the same run; the results list then holds those too, in the order they were
added. The transformers backend gives them the next free slot of its running batch; the others run them in rounds
(`in_rounds`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

Messages = tuple[tuple[str, str], ...]  # (role, content) pairs: hashable, so requests can be cache keys


def as_messages(messages: list[dict[str, str]]) -> Messages:
    return tuple((m["role"], m["content"]) for m in messages)


def as_dicts(messages: Messages) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in messages]


def payload_key(model: str, revision: str | None, kind: str, request: Any) -> str:
    """Cache key: a hash of the canonical request (model id and revision, messages, params, seed, sample)."""
    payload = {"model": model, "revision": revision, kind: asdict(request)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class Constraint:
    """Either a JSON schema the output must satisfy, or a fixed set of choices (the output is one of them)."""

    json_schema: str | None = None  # canonical JSON text of the schema
    choices: tuple[str, ...] | None = None

    @staticmethod
    def schema(schema: dict) -> Constraint:
        # keys keep their order: the grammar makes the model write fields in the order the schema lists them
        return Constraint(json_schema=json.dumps(schema, separators=(",", ":")))

    @staticmethod
    def one_of(choices: list[str]) -> Constraint:
        return Constraint(choices=tuple(choices))


@dataclass(frozen=True)
class GenerationRequest:
    messages: Messages
    sampling: Sampling = field(default_factory=Sampling)
    constraint: Constraint | None = None
    sample_index: int = 0  # the k-th sample of the same prompt (n > 1 expands into several requests)

    @staticmethod
    def chat(
        messages: list[dict[str, str]],
        sampling: Sampling | None = None,
        constraint: Constraint | None = None,
        sample_index: int = 0,
    ) -> GenerationRequest:
        return GenerationRequest(as_messages(messages), sampling or Sampling(), constraint, sample_index)

    def message_dicts(self) -> list[dict[str, str]]:
        return as_dicts(self.messages)

    def key(self, model: str, revision: str | None) -> str:
        return payload_key(model, revision, "request", self)


@dataclass
class GenerationResult:
    text: str
    finish_reason: str  # "stop" | "length" | "error" (the engine raised on this request; `text` says why)
    prompt_tokens: int
    completion_tokens: int
    seconds: float = 0.0
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScoreRequest:
    """Log-probability of each option as the continuation of a shared prompt (after the assistant turn opens)."""

    messages: Messages
    options: tuple[str, ...]

    @staticmethod
    def chat(messages: list[dict[str, str]], options: list[str]) -> ScoreRequest:
        return ScoreRequest(as_messages(messages), tuple(options))

    def message_dicts(self) -> list[dict[str, str]]:
        return as_dicts(self.messages)

    def key(self, model: str, revision: str | None) -> str:
        return payload_key(model, revision, "score", self)


@dataclass
class ScoreResult:
    logprobs: list[float]  # summed over each option's tokens
    token_counts: list[int]
    seconds: float = 0.0
    cached: bool = False
    error: str | None = None  # the engine could not score this request (why, in one line); never cached

    @staticmethod
    def failed(reason: str) -> ScoreResult:
        return ScoreResult([], [], error=reason)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Follow = Callable[[int, GenerationResult], list[GenerationRequest]]


class Backend(Protocol):
    model_id: str
    revision: str | None

    def generate(self, requests: list[GenerationRequest], follow: Follow | None = None) -> list[GenerationResult]: ...

    def score_choices(self, requests: list[ScoreRequest]) -> list[ScoreResult]: ...


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def score_each(
    score: Callable[[list[ScoreRequest]], list[ScoreResult]], requests: list[ScoreRequest]
) -> list[ScoreResult]:
    """`score(requests)`; if it raises, each request alone, and one that raises again comes back as a failed
    result with its reason: one bad prompt never fails its neighbours. A `FactoryError` (the backend cannot score
    at all) is not a per-request failure and propagates."""
    from factory.errors import FactoryError

    try:
        return score(requests)
    except FactoryError:
        raise
    except Exception as exc:
        if len(requests) == 1:
            return [ScoreResult.failed(one_line(exc))]
    out: list[ScoreResult] = []
    for request in requests:
        try:
            out += score([request])
        except FactoryError:
            raise
        except Exception as exc:
            out.append(ScoreResult.failed(one_line(exc)))
    return out


def in_rounds(
    generate: Callable[[list[GenerationRequest]], list[GenerationResult]],
    requests: list[GenerationRequest],
    follow: Follow | None,
    chunk: int | None = None,
) -> list[GenerationResult]:
    """`follow` for a backend that runs whole batches: requests go to `generate` in order, `chunk` at a time (all
    that wait, when None), and each result is followed as soon as its call returns, so the cache behind `follow`
    holds it before the next call starts; follow-ups queue behind the requests already waiting."""
    results: list[GenerationResult] = []
    todo = list(requests)
    while len(results) < len(todo):
        start = len(results)
        done = generate(todo[start : start + chunk] if chunk else todo[start:])
        for j, result in enumerate(done):
            results.append(result)
            if follow is not None:
                todo += follow(start + j, result)
    return results
