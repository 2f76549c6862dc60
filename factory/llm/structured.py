"""Structured output: parse and validate model text, retry with a fresh seed, keep what still fails.

`run_jobs` (and `generate_validated`, for plain request lists) sends requests, checks each answer with a parser
(JSON schema, choice, or any callable that raises `Invalid`), re-asks the failures with a new seed up to
`max_retries` times, and returns per request either the parsed value or the last raw text with its reason. A job's
`then` adds follow-up jobs (a conversation's next turn) that join the same run. Nothing is dropped: the caller
writes failures to the stage's `failures` output. Truncation at `max_tokens` is a failure of its own
("truncated at max_tokens").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from factory.llm.types import GenerationRequest, GenerationResult
from factory.seeds import derive_seed


class Invalid(ValueError):
    """Raised by a parser with the reason an answer is unusable."""


# A JSON escape can spell half of a surrogate pair ("\ud83d"): Python decodes it to a lone surrogate, which no UTF-8
# writer (Arrow, SQLite, a JSON file) can encode, so one such answer would crash the batch that stores it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """`text` with any lone surrogate replaced by U+FFFD, so it can be written as UTF-8 (raw answers, caches)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _non_finite(constant: str) -> Any:
    raise Invalid(f"invalid JSON: {constant} is not a JSON number")


def _check_strings(value: Any, path: str = "") -> None:
    """Raise `Invalid` at the first string (or key) holding a lone surrogate."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise Invalid(f"invalid JSON: {path or '(root)'}: lone surrogate escape in a string")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(k, path)
            _check_strings(v, f"{path}/{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_strings(v, f"{path}/{i}" if path else str(i))


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
            # NaN and Infinity are Python's extension, not JSON: stored, they would make the row unreadable elsewhere
            value = json.loads(text, parse_constant=_non_finite)
        except json.JSONDecodeError as exc:
            raise Invalid(f"invalid JSON: {exc.msg} at char {exc.pos}") from None
        except Invalid:
            raise
        except Exception as exc:  # too deep (RecursionError), an integer past Python's digit limit (ValueError), ...
            raise Invalid(f"invalid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
        _check_strings(value)
        try:
            errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        except Exception as exc:  # a schema pattern the regex engine rejects, a value too deep to walk, ...
            raise Invalid(f"schema check failed: {type(exc).__name__}: {str(exc)[:200]}") from None
        if errors:
            where = "/".join(map(str, errors[0].absolute_path)) or "(root)"
            raise Invalid(f"schema: {where}: {errors[0].message[:200]}")
        return value

    return parse


def text_parser(min_chars: int = 1) -> Callable[[str], str]:
    def parse(text: str) -> str:
        text = encodable(text).strip()
        if len(text) < min_chars:
            raise Invalid("empty output" if not text else f"shorter than {min_chars} characters")
        return text

    return parse


@dataclass
class Job:
    """A request, the parser its answer must pass, and optionally what comes next: `then(validated)` returns
    follow-up jobs (the next turn of a conversation) that join the same run."""

    request: GenerationRequest
    parse: Callable[[str], Any]
    then: Callable[[Validated], list[Job]] | None = None


def run_jobs(client: Any, jobs: list[Job], max_retries: int = 2, truncation_ok: bool = False) -> list[Validated]:
    """Every job's validated answer: the given jobs', then their follow-ups' in the order they were added.

    A failed answer is re-asked with a fresh seed up to `max_retries` times; retries and follow-ups join the
    backend's running batch as soon as the answer before them is in (on backends that can), rather than waiting for
    a round of every other request to end. `truncation_ok`: parse text cut at max_tokens too (an option letter
    written before the cut is an answer); otherwise truncation is a failure of its own."""
    jobs = list(jobs)
    out: list[Validated | None] = [None] * len(jobs)
    asked: list[tuple[int, int]] = []  # the client's request index -> (job, attempt)
    spent: dict[int, tuple[int, int]] = {}  # job -> tokens in and out over its attempts

    def ask(job: int, attempt: int, request: GenerationRequest) -> GenerationRequest:
        asked.append((job, attempt))
        return request

    def answered(index: int, result: GenerationResult) -> list[GenerationRequest]:
        j, attempt = asked[index]
        job = jobs[j]
        tin, tout = spent.get(j, (0, 0))
        spent[j] = tin, tout = tin + result.prompt_tokens, tout + result.completion_tokens
        reason, value = None, None
        if result.finish_reason == "error":  # the engine raised on this request (text: the error); others go on
            reason = f"backend error: {result.text}"
        elif result.finish_reason == "length" and not truncation_ok:
            reason = "truncated at max_tokens"
        else:
            try:
                value = job.parse(result.text)
            except Invalid as exc:
                reason = str(exc) if result.finish_reason != "length" else f"truncated at max_tokens: {exc}"
            except Exception as exc:  # a parser that trips on odd output fails that answer, not the whole batch
                reason = f"parser error: {type(exc).__name__}: {str(exc)[:200]}"
        if reason is not None and attempt < max_retries:
            seed = derive_seed(job.request.sampling.seed, "retry", attempt + 1) % (2**31)
            retry = replace(job.request, sampling=replace(job.request.sampling, seed=seed))
            return [ask(j, attempt + 1, retry)]
        out[j] = Validated(job.request, value, result, attempt + 1, reason, tin, tout)
        more = job.then(out[j]) if job.then is not None else []
        jobs.extend(more)
        out.extend([None] * len(more))
        return [ask(len(jobs) - len(more) + k, 0, m.request) for k, m in enumerate(more)]

    client.generate([ask(j, 0, job.request) for j, job in enumerate(list(jobs))], answered)
    return out  # type: ignore[return-value]


def generate_validated(
    client: Any,
    requests: list[GenerationRequest],
    parse: Callable[[str], Any] | list[Callable[[str], Any]],
    max_retries: int = 2,
    truncation_ok: bool = False,
) -> list[Validated]:
    """`run_jobs` for requests with no follow-ups. `parse`: one parser for all requests, or one per request (each
    answer checked against its own options)."""
    parsers = parse if isinstance(parse, list) else [parse] * len(requests)
    return run_jobs(client, [Job(r, p) for r, p in zip(requests, parsers)], max_retries, truncation_ok)
