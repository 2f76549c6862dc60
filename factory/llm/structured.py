"""Structured output: parse and validate model text, retry with a fresh seed, keep what still fails.

`generate_validated` sends requests, checks each answer with a parser (JSON schema, choice, or any callable that
raises `Invalid`), re-asks the failures with a new seed up to `max_retries` times, and returns per request either
the parsed value or the last raw text with its reason. Nothing is dropped: the caller writes failures to the
stage's `failures` output. Truncation at `max_tokens` is a failure of its own ("truncated at max_tokens").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from factory.llm.types import GenerationRequest, GenerationResult
from factory.stage import derive_seed


class Invalid(ValueError):
    """Raised by a parser with the reason an answer is unusable."""


@dataclass
class Validated:
    request: GenerationRequest
    value: Any  # parsed value, or None when every attempt failed
    result: GenerationResult  # the last attempt
    attempts: int
    reason: str | None  # why the last attempt failed (None on success)
    tokens_in: int = 0
    tokens_out: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None


def json_parser(schema: dict[str, Any]) -> Callable[[str], Any]:
    """Parse JSON and validate it against `schema` (Draft 2020-12)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)

    def parse(text: str) -> Any:
        text = text.strip()
        if not text:
            raise Invalid("empty output")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Invalid(f"invalid JSON: {exc.msg} at char {exc.pos}") from None
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(map(str, errors[0].absolute_path)) or "(root)"
            raise Invalid(f"schema: {where}: {errors[0].message[:200]}")
        return value

    return parse


def text_parser(min_chars: int = 1) -> Callable[[str], str]:
    def parse(text: str) -> str:
        text = text.strip()
        if len(text) < min_chars:
            raise Invalid("empty output" if not text else f"shorter than {min_chars} characters")
        return text

    return parse


def generate_validated(
    client: Any,
    requests: list[GenerationRequest],
    parse: Callable[[str], Any] | list[Callable[[str], Any]],
    max_retries: int = 2,
    truncation_ok: bool = False,
) -> list[Validated]:
    """`parse`: one parser for all requests, or one per request (each answer checked against its own options).
    `truncation_ok`: parse text cut at max_tokens too (an option letter written before the cut is an answer);
    otherwise truncation is a failure of its own."""
    parsers = parse if isinstance(parse, list) else [parse] * len(requests)
    out: list[Validated | None] = [None] * len(requests)
    pending = list(range(len(requests)))
    current = list(requests)
    tokens_in = [0] * len(requests)
    tokens_out = [0] * len(requests)
    for attempt in range(max_retries + 1):
        results = client.generate([current[i] for i in pending])
        retry = []
        for i, result in zip(pending, results):
            tokens_in[i] += result.prompt_tokens
            tokens_out[i] += result.completion_tokens
            reason, value = None, None
            if result.finish_reason == "length" and not truncation_ok:
                reason = "truncated at max_tokens"
            else:
                try:
                    value = parsers[i](result.text)
                except Invalid as exc:
                    reason = str(exc) if result.finish_reason != "length" else f"truncated at max_tokens: {exc}"
            out[i] = Validated(requests[i], value, result, attempt + 1, reason, tokens_in[i], tokens_out[i])
            if reason is not None and attempt < max_retries:
                seed = derive_seed(requests[i].sampling.seed, "retry", attempt + 1) % (2**31)
                current[i] = replace(current[i], sampling=replace(current[i].sampling, seed=seed))
                retry.append(i)
        pending = retry
        if not pending:
            break
    return out  # type: ignore[return-value]
