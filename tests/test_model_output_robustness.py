"""Model output that is not valid JSON in a way Python's json module lets through (a lone surrogate escape, NaN,
Infinity), or that makes the validator itself raise, is a failure with its reason: kept, never stored as a row,
never a crash of the batch, and never a poisoned request cache."""

from __future__ import annotations

import json

import pytest

from factory.llm.backend import CachedBackend
from factory.llm.cache import RequestCache
from factory.llm.structured import Invalid, generate_validated, json_parser, text_parser
from factory.llm.types import GenerationRequest, GenerationResult, Sampling

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "score": {"type": "number"}}}


class Scripted:
    model_id, revision = "scripted", None

    def __init__(self, answers):
        self.answers = list(answers)

    def generate(self, requests, follow=None):
        from factory.llm.types import in_rounds

        return in_rounds(lambda rs: [GenerationResult(self.answers.pop(0), "stop", 3, 5) for _ in rs], requests, follow)


def chat(text: str, seed: int = 0) -> GenerationRequest:
    return GenerationRequest.chat([{"role": "user", "content": text}], Sampling(seed=seed))


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"name": "\\ud83d"}', "lone surrogate"),
        ('{"\\udc00": "x"}', "lone surrogate"),
        ('{"name": "x", "score": NaN}', "NaN is not a JSON number"),
        ('{"name": "x", "score": Infinity}', "Infinity is not a JSON number"),
        ('{"name": "x", "score": -Infinity}', "-Infinity is not a JSON number"),
        ("[" * 100_000 + "]" * 100_000, "invalid JSON"),
        ('{"score": ' + "9" * 5000 + "}", "invalid JSON"),
    ],
)
def test_json_python_accepts_but_no_writer_can_store_is_invalid(text, reason):
    with pytest.raises(Invalid, match=reason):
        json_parser(SCHEMA)(text)


def test_a_valid_surrogate_pair_is_one_character_and_valid():
    assert json_parser(SCHEMA)('{"name": "\\ud83d\\ude00"}') == {"name": "\U0001f600"}


def test_an_exception_inside_the_schema_check_is_invalid_with_its_reason():
    parse = json_parser({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}})
    with pytest.raises(Invalid, match="schema check failed: .*unterminated"):
        parse('{"a": "x"}')


def test_a_parser_that_raises_anything_fails_that_answer_not_the_batch():
    def fragile(text: str):
        return {"A": 1}[text]  # KeyError on anything else

    out = generate_validated(Scripted(["A", "B"]), [chat("p", 1), chat("q", 2)], fragile, max_retries=0)
    assert out[0].ok and out[0].value == 1
    assert not out[1].ok and out[1].reason.startswith("parser error: KeyError")


def test_a_lone_surrogate_from_the_backend_is_replaced_before_it_is_cached_or_written(tmp_path):
    """An API whose JSON carried "\\ud83d" hands the client a real lone surrogate; it becomes U+FFFD (as a
    tokenizer writes undecodable bytes), so the cache can store it, rows encode, and a rerun replays it."""
    lone = '{"name": "\ud83d"}'
    cache = RequestCache(tmp_path / "requests.sqlite")
    client = CachedBackend(Scripted([lone, "x\ud83d"]), cache)
    out = generate_validated(client, [chat("p", 1)], json_parser(SCHEMA), max_retries=0)
    text_out = generate_validated(client, [chat("q", 2)], text_parser(1), max_retries=0)
    assert out[0].ok and out[0].value == {"name": "\ufffd"}
    out[0].result.text.encode("utf-8")
    json.dumps({"raw": out[0].result.text}, ensure_ascii=False).encode("utf-8")
    assert text_out[0].ok and text_out[0].value == "x\ufffd"
    import pyarrow as pa

    pa.array([out[0].result.text, text_out[0].value])  # what the runner writes: no UnicodeEncodeError
    replay = CachedBackend(Scripted([]), RequestCache(tmp_path / "requests.sqlite"))
    again = generate_validated(replay, [chat("p", 1)], json_parser(SCHEMA), max_retries=0)
    assert replay.calls == 0 and again[0].result.text == out[0].result.text


def test_an_escaped_lone_surrogate_replayed_from_the_cache_is_a_failure_every_time(tmp_path):
    cache = RequestCache(tmp_path / "requests.sqlite")
    escaped = '{"name": "\\ud83d"}'
    first = generate_validated(CachedBackend(Scripted([escaped]), cache), [chat("p")], json_parser(SCHEMA), 0)
    again = generate_validated(CachedBackend(Scripted([]), cache), [chat("p")], json_parser(SCHEMA), 0)
    for v in (first[0], again[0]):
        assert not v.ok and "lone surrogate" in v.reason and v.result.text == escaped


def test_the_reflective_profile_rejects_non_finite_numbers():
    """NaN passed the profile's `number` fields and was stored as JSON no other reader accepts."""
    from factory.personas import styles

    parse = json_parser(styles.reflective_schema())
    for constant in ("NaN", "Infinity"):
        with pytest.raises(Invalid, match=f"{constant} is not a JSON number"):
            parse('{"big_five": {"openness": ' + constant + "}}")
