"""The LLM layer on a tiny model built in the session: constrained generation, seeds, cache, scoring, retries."""

from __future__ import annotations

import json

import pytest

from factory.llm.backend import CachedBackend
from factory.llm.cache import RequestCache
from factory.llm.structured import Invalid, generate_validated, json_parser, text_parser
from factory.llm.types import Constraint, GenerationRequest, GenerationResult, Sampling, ScoreRequest

SCHEMA = {
    "type": "object",
    "properties": {"age": {"type": "integer"}, "state": {"type": "string", "enum": ["NY", "WY"]}},
    "required": ["age", "state"],
    "additionalProperties": False,
}


@pytest.fixture(scope="session")
def tiny_backend(tiny_path):
    from factory.llm.transformers_backend import TransformersBackend

    return TransformersBackend(str(tiny_path), batch_size=3)


def chat(text: str, **sampling) -> GenerationRequest:
    return GenerationRequest.chat([{"role": "user", "content": text}], Sampling(**sampling))


def test_json_schema_constraint_gives_valid_json(tiny_backend):
    parse = json_parser(SCHEMA)
    reqs = [
        GenerationRequest.chat(
            [{"role": "user", "content": "a person"}],
            Sampling(temperature=1.0, max_tokens=60, seed=s),
            Constraint.schema(SCHEMA),
        )
        for s in range(6)
    ]
    results = tiny_backend.generate(reqs)
    finished = [r for r in results if r.finish_reason == "stop"]
    assert finished, "the tiny model never closed its JSON object"
    for r in finished:
        value = parse(r.text)
        assert value["state"] in ("NY", "WY")
    for r in results:
        assert r.text.startswith('{"age"')  # even unfinished output follows the grammar


def test_choice_constraint(tiny_backend):
    reqs = [
        GenerationRequest.chat(
            [{"role": "user", "content": f"pick {i}"}],
            Sampling(temperature=1.0, seed=i),
            Constraint.one_of(["A", "B", "Refused"]),
        )
        for i in range(8)
    ]
    assert {r.text for r in tiny_backend.generate(reqs)} <= {"A", "B", "Refused"}


def test_seeds_make_results_independent_of_batching(tiny_backend):
    reqs = [chat(f"hello {i}", temperature=1.0, max_tokens=12, seed=i) for i in range(5)]
    a = [r.text for r in tiny_backend.generate(reqs)]
    b = [r.text for r in tiny_backend.generate(reqs[::-1])][::-1]
    c = [tiny_backend.generate([r])[0].text for r in reqs]
    assert a == b == c
    other = tiny_backend.generate([chat("hello 0", temperature=1.0, max_tokens=12, seed=99)])[0].text
    assert other != a[0]


def test_greedy_and_token_counts(tiny_backend):
    r = tiny_backend.generate([chat("count", temperature=0, max_tokens=5)])[0]
    assert r.completion_tokens <= 5 and r.prompt_tokens > 3
    assert r.finish_reason in ("stop", "length")


def test_score_choices_matches_a_full_forward_pass(tiny_backend):
    import torch

    messages = [{"role": "user", "content": "Which one?"}]
    options = ["A", "B", "Yes, no"]
    got = tiny_backend.score_choices([ScoreRequest.chat(messages, options)])[0]
    prompt = tiny_backend.prompt_ids(messages)
    with torch.inference_mode():
        for option, score in zip(options, got.logprobs):
            ids = tiny_backend.tokenizer.encode(option, add_special_tokens=False)
            logits = tiny_backend.model(torch.tensor(prompt + ids)[None]).logits.float()[0]
            lp = torch.log_softmax(logits, -1)
            want = sum(float(lp[len(prompt) - 1 + j, t]) for j, t in enumerate(ids))
            assert score == pytest.approx(want, abs=1e-3)


def _full_pass_score(backend, messages, option):
    import torch

    prompt = backend.prompt_ids(messages)
    ids = backend.tokenizer.encode(option, add_special_tokens=False)
    with torch.inference_mode():
        lp = torch.log_softmax(backend.model(torch.tensor(prompt + ids)[None]).logits.float()[0], -1)
    return sum(float(lp[len(prompt) - 1 + j, t]) for j, t in enumerate(ids))


def test_batched_scoring_with_shared_prefixes_matches_full_passes(tiny_backend, monkeypatch):
    """Three people, several questions each, as the answers stage asks them: one person's questions share the
    persona prefix (run once, continued from copies of its KV cache); option sets that differ in more than the
    last token, and a lone request, take the other paths. Every score equals a full pass on its own."""
    from factory.llm import transformers_backend as tb

    persona = "You are this person: " + " ".join(f"fact{i}" for i in range(40))
    requests = []
    for person in range(3):
        system = {"role": "system", "content": f"{persona} number {person}."}
        for q in range(3 if person != 1 else 1):
            user = {"role": "user", "content": f"Question {q}: " + "why " * (3 * q + 1) + "?"}
            letters = ["AB", "ABD", "BD"][q]  # the tiny tokenizer splits " C" in two: that set takes the other path
            requests.append(ScoreRequest.chat([system, user], [f"Answer: {x}" for x in letters]))
    requests.insert(2, ScoreRequest.chat([{"role": "user", "content": "odd one"}], ["A", "Yes, no", "B C D"]))
    requests.insert(5, ScoreRequest.chat([{"role": "user", "content": "odd two"}], ["Answer: A", "Answer: C"]))
    groups = []
    original = tb._prefix_groups
    monkeypatch.setattr(tb, "_prefix_groups", lambda plans, size: groups.append(original(plans, size)) or groups[-1])
    got = tiny_backend.score_choices(requests)
    assert [len(g) for g in groups[0]] == [3, 1, 3]  # person 0, person 1 (one question), person 2
    for r, res in zip(requests, got):
        want = [_full_pass_score(tiny_backend, r.message_dicts(), o) for o in r.options]
        assert res.logprobs == pytest.approx(want, abs=1e-3)
    alone = [tiny_backend.score_choices([r])[0].logprobs for r in requests]
    for res, one in zip(got, alone):
        assert res.logprobs == pytest.approx(one, abs=1e-4)


def test_cache_answers_repeats_without_calling_the_model(tiny_backend, tmp_path):
    client = CachedBackend(tiny_backend, RequestCache(tmp_path / "c.sqlite"))
    reqs = [chat(f"q{i}", max_tokens=6, seed=i) for i in range(4)]
    first = client.generate(reqs)
    assert client.calls == 4 and not any(r.cached for r in first)
    again = CachedBackend(tiny_backend, RequestCache(tmp_path / "c.sqlite"))  # a new process, same file
    second = again.generate([*reqs, chat("new", max_tokens=6)])
    assert again.calls == 1 and [r.cached for r in second] == [True] * 4 + [False]
    assert [r.text for r in first] == [r.text for r in second[:4]]
    scores = again.score_choices([ScoreRequest.chat([{"role": "user", "content": "x"}], ["A", "B"])] * 2)
    assert again.calls == 2 and scores[1].cached and scores[0].logprobs == scores[1].logprobs


class Scripted:
    """A backend that answers from a script, to feed the validator garbage."""

    model_id, revision = "scripted", None

    def __init__(self, answers):
        self.answers = list(answers)
        self.seeds = []

    def generate(self, requests):
        out = []
        for r in requests:
            self.seeds.append(r.sampling.seed)
            text, finish = self.answers.pop(0)
            out.append(GenerationResult(text, finish, 3, len(text)))
        return out


def test_garbage_is_retried_with_new_seeds_then_kept_with_its_reason():
    backend = Scripted(
        [
            ("{not json", "stop"),
            ('{"age": 3', "length"),
            ("", "stop"),  # first attempts
            ('{"age": 40, "state": "WY"}', "stop"),
            ('{"age": "x", "state": "NY"}', "stop"),
            ("   ", "stop"),  # retries
            ('{"age": 1, "state": "CA"}', "stop"),
            ("", "stop"),
        ]
    )  # second retries
    reqs = [chat(f"p{i}", seed=7) for i in range(3)]
    out = generate_validated(backend, reqs, json_parser(SCHEMA), max_retries=2)
    assert out[0].ok and out[0].value == {"age": 40, "state": "WY"} and out[0].attempts == 2
    assert not out[1].ok and out[1].reason.startswith("schema: state: 'CA' is not one of")
    assert not out[2].ok and out[2].reason == "empty output" and out[2].attempts == 3
    assert len(set(backend.seeds)) > 1  # retries use fresh seeds


def test_truncation_and_text_parser():
    backend = Scripted([("a long answer that was cut", "length"), ("ok", "stop")])
    out = generate_validated(backend, [chat("x")], text_parser(), max_retries=0)
    assert out[0].reason == "truncated at max_tokens"
    with pytest.raises(Invalid):
        text_parser()("  ")
    assert json.loads(Constraint.schema(SCHEMA).json_schema) == SCHEMA


def test_prompts_are_sandboxed_and_strict(tmp_path):
    from factory.errors import DataError
    from factory.prompts import render

    (tmp_path / "p.jinja").write_text("Hello {{ person.name }} from {{ person.state }}")
    assert render(tmp_path / "p.jinja", person={"name": "Ana", "state": "WY"}) == "Hello Ana from WY"
    with pytest.raises(DataError, match="'dict object' has no attribute 'state'"):
        render(tmp_path / "p.jinja", person={"name": "Ana"})
    (tmp_path / "evil.jinja").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(Exception, match="unsafe|access"):
        render(tmp_path / "evil.jinja")


@pytest.mark.slow
def test_embedded_default_model_converts_and_answers(tmp_path, monkeypatch):
    from factory.backends.config import TransformersConfig
    from factory.llm import backend

    monkeypatch.setenv("FACTORY_CACHE", str(tmp_path))
    client = backend.load(TransformersConfig(), None)
    r = client.generate([chat("Name a US state.", temperature=0, max_tokens=8)])[0]
    assert r.text and "SmolLM2" in client.model_id
