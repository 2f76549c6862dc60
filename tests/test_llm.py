"""The LLM layer on a tiny model built in the session: constrained generation, seeds, cache, scoring, retries."""

from __future__ import annotations

import json

import pytest
import torch

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


def _mixed_requests() -> list[GenerationRequest]:
    """Prompts and answer lengths that differ, sampled and greedy, some under a JSON schema."""
    return [
        GenerationRequest.chat(
            [{"role": "user", "content": "hello " * (3 * i + 1)}],
            Sampling(temperature=0.0 if i % 2 else 1.0, max_tokens=5 + 7 * i, seed=i),
            Constraint.schema(SCHEMA) if i % 3 == 0 else None,
        )
        for i in range(11)
    ]


def _answers(results: list[GenerationResult]) -> list[tuple]:
    return [(r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens) for r in results]


@pytest.mark.parametrize("growth", [1.25, 1.0])  # 1.0: the cache grows again for every longer joiner
def test_continuous_batching_gives_the_tokens_of_static_batches(tiny_backend, monkeypatch, growth):
    from factory.llm import decode

    assert tiny_backend.slots  # the tiny Llama is served by the slot decoder
    monkeypatch.setattr(decode.Decoder, "growth", growth)
    reqs = _mixed_requests()  # 11 requests through 3 slots: every slot is reused
    static = _answers(tiny_backend._static(reqs))
    decoder = decode.Decoder(tiny_backend, reqs, None)
    assert _answers(decoder.run()) == static
    # the schema's keys and quotes were forced: fed in passes, never sampled one step each
    assert decoder.forced >= 4 * 3 and decoder.fed <= sum(a[2] + a[3] for a in static)
    assert [_answers(tiny_backend._static([r]))[0] for r in reqs] == static  # and of each request alone
    assert len({a[3] for a in static}) > 3  # the answers really differ in length


def test_bfloat16_weights_decode_over_a_float32_cache(tiny_path):
    """Half-precision weights (the quickstart's setting on CPU) with keys and values kept in float32: each request
    gets the tokens it gets alone, and schema requests still give schema-valid JSON."""
    from factory.llm import decode
    from factory.llm.transformers_backend import TransformersBackend

    backend = TransformersBackend(str(tiny_path), batch_size=3, dtype="bfloat16")
    assert backend.model.dtype == torch.bfloat16
    reqs = _mixed_requests()
    decoder = decode.Decoder(backend, reqs, None)
    together = _answers(decoder.run())
    assert decoder.cache.layers[0].keys.dtype == torch.float32
    assert together == [_answers(backend.generate([r]))[0] for r in reqs]
    parse = json_parser(SCHEMA)
    for r, (text, finish, _, _) in zip(reqs, together):
        if r.constraint is not None and finish == "stop":
            assert parse(text)["state"] in ("NY", "WY")


def test_follow_ups_join_the_running_batch(tiny_backend):
    reqs = _mixed_requests()
    finished: list[int] = []

    def follow(i: int, result: GenerationResult) -> list[GenerationRequest]:
        finished.append(i)
        if i < 3:  # a next turn that depends on the answer, as a conversation's does
            return [chat(f"again {result.text[:12]}", temperature=1.0, max_tokens=4, seed=100 + i)]
        return []

    results = tiny_backend.generate(reqs, follow)
    assert len(results) == 14 and sorted(finished) == list(range(14))  # each answer reported once
    assert _answers(results[:11]) == _answers(tiny_backend._static(reqs))
    for i, r in enumerate(results[11:]):
        alone = chat(f"again {results[i].text[:12]}", temperature=1.0, max_tokens=4, seed=100 + i)
        assert _answers([r]) == _answers(tiny_backend._static([alone]))
    # a follow-up ran while first requests were still decoding: it joined the batch, not a round after it
    assert min(finished.index(j) for j in range(11, 14)) < max(finished.index(j) for j in range(11))


def test_follow_ups_reuse_their_parent_s_keys_and_values(tiny_backend):
    """A retry has its parent's prompt and a next turn starts with the last turn and its reply: those tokens are
    not prefilled again, and the answers are those of prefilling everything."""
    from dataclasses import replace

    from factory.llm.decode import Decoder

    system = {"role": "system", "content": "You write careful answers about people. " * 3}
    reqs = [
        GenerationRequest.chat([system, {"role": "user", "content": "hello " * (3 * i + 1)}],
                               Sampling(temperature=1.0, max_tokens=8 + 5 * i, seed=i))
        for i in range(6)
    ]  # fmt: skip

    def follow(i: int, result: GenerationResult) -> list[GenerationRequest]:
        if i >= 6:
            return []
        if i % 2 == 0:  # a retry with a fresh seed
            return [replace(reqs[i], sampling=replace(reqs[i].sampling, seed=1000 + i))]
        turn = [
            *reqs[i].message_dicts(),
            {"role": "assistant", "content": result.text},
            {"role": "user", "content": "and?"},
        ]
        return [GenerationRequest.chat(turn, Sampling(temperature=1.0, max_tokens=6, seed=50 + i))]

    decoder = Decoder(tiny_backend, reqs, follow)
    results = decoder.run()
    assert len(results) == 12 and decoder.reused_tokens > 6 * 40
    assert _answers(results) == _answers(tiny_backend._static(decoder.requests))


def test_requests_that_share_a_prefix_compute_it_once(tiny_backend):
    """One person's styles share their facts: a joiner copies those keys and values from a slot that holds them
    (waiting a pass when the holder joins in the same round), and answers as if it had computed them."""
    from factory.llm.decode import Decoder

    facts = {"role": "user", "content": "Facts about a person: age 41, state NY, teacher. " * 4}
    reqs = [
        GenerationRequest.chat([facts, {"role": "assistant", "content": "ok"}, {"role": "user", "content": ask}],
                               Sampling(temperature=1.0, max_tokens=6 + i, seed=i))
        for i, ask in enumerate(["table", "portrait", "summary", "profile", "story"])
    ]  # fmt: skip
    shared = len(tiny_backend.prompt_ids([facts]))
    decoder = Decoder(tiny_backend, reqs, None)
    results = decoder.run()
    assert decoder.reused_tokens >= 4 * (shared - 8)  # all but the first copy (nearly) the whole facts message
    assert _answers(results) == _answers(tiny_backend._static(reqs))


def test_static_batches_run_follow_ups_in_rounds(tiny_backend, monkeypatch):
    from transformers import LlamaConfig

    from factory.llm import decode

    class Model:  # a sliding window shorter than a sequence can be: the slot decoder's mask would ignore it
        _supports_attention_backend = True
        config = LlamaConfig(sliding_window=64, use_sliding_window=True)

    assert not decode.supports_slots(Model())
    Model.config = LlamaConfig(sliding_window=64, use_sliding_window=False)
    assert decode.supports_slots(Model())
    monkeypatch.setattr(tiny_backend, "slots", False)
    reqs = _mixed_requests()[:4]
    results = tiny_backend.generate(reqs, lambda i, r: [chat("more", max_tokens=3, seed=9)] if i == 0 else [])
    assert len(results) == 5 and _answers(results[:4]) == _answers(tiny_backend._static(reqs))


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


def test_a_prompt_longer_than_the_context_fails_alone_and_is_not_cached(tiny_backend, tmp_path):
    client = CachedBackend(tiny_backend, RequestCache(tmp_path / "c.sqlite"))
    fine = ScoreRequest.chat([{"role": "user", "content": "x"}], ["Answer: A", "Answer: B"])
    huge = ScoreRequest.chat([{"role": "user", "content": "why " * 1200}], ["Answer: A", "Answer: B"])
    got = client.score_choices([fine, huge, fine])
    assert got[1].error is not None and "longer than the model's 1024" in got[1].error and not got[1].logprobs
    assert got[0].error is None and got[0].logprobs == tiny_backend.score_choices([fine])[0].logprobs
    again = CachedBackend(tiny_backend, RequestCache(tmp_path / "c.sqlite"))
    assert [r.cached for r in again.score_choices([fine, huge])] == [True, False] and again.calls == 1


def test_a_scoring_call_that_raises_is_retried_request_by_request():
    from factory.errors import FactoryError
    from factory.llm.types import ScoreResult, score_each

    calls = []

    def score(requests):
        calls.append(len(requests))
        if any(r.options[0] == "boom" for r in requests):
            raise RuntimeError("engine fell over\nsecond line")
        return [ScoreResult([0.0] * len(r.options), [1] * len(r.options)) for r in requests]

    user = [{"role": "user", "content": "q"}]
    requests = [ScoreRequest.chat(user, ["boom" if i == 1 else "ok", str(i)]) for i in range(3)]
    got = score_each(score, requests)
    assert calls == [3, 1, 1, 1]
    assert [r.error for r in got] == [None, "RuntimeError: engine fell over", None]

    def cannot(requests):
        raise FactoryError("this backend cannot score")

    with pytest.raises(FactoryError):  # the backend as a whole, not one request: the stage fails with its line
        score_each(cannot, requests)


def test_cache_stores_each_answer_as_it_finishes_and_resolves_cached_follow_ups(tiny_backend, tmp_path):
    reqs = [chat(f"q{i}", max_tokens=6, seed=i) for i in range(4)]

    def follow(i, result):
        return [chat(f"next {i}", max_tokens=4, seed=i)] if i < 2 else []

    client = CachedBackend(tiny_backend, RequestCache(tmp_path / "c.sqlite"))
    first = client.generate(reqs, follow)
    assert client.calls == 6 and len(first) == 6

    killed = CachedBackend(tiny_backend, RequestCache(tmp_path / "k.sqlite"))
    seen: list[int] = []

    def dies(i, result):
        seen.append(i)
        if len(seen) == 3:
            raise RuntimeError("killed")
        return follow(i, result)

    with pytest.raises(RuntimeError, match="killed"):
        killed.generate(reqs, dies)
    resumed = CachedBackend(tiny_backend, RequestCache(tmp_path / "k.sqlite"))
    again = resumed.generate(reqs, follow)
    # the three answers the model finished (the last one stored before its follow-up died) are not asked again
    assert resumed.calls == 6 - 3
    assert [r.text for r in again] == [r.text for r in first]
    assert sum(r.cached for r in again) == 3

    replay = CachedBackend(tiny_backend, RequestCache(tmp_path / "c.sqlite"))
    assert [r.text for r in replay.generate(reqs, follow)] == [r.text for r in first]
    assert replay.calls == 0  # follow-ups of cached answers are looked up too


class Scripted:
    """A backend that answers from a script, to feed the validator garbage."""

    model_id, revision = "scripted", None

    def __init__(self, answers):
        self.answers = list(answers)
        self.seeds = []

    def generate(self, requests, follow=None):  # follow-ups (retries) in rounds, as remote backends run them
        from factory.llm.types import in_rounds

        return in_rounds(self._answer, requests, follow)

    def _answer(self, requests):
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


def test_a_job_s_follow_up_joins_the_run_and_is_retried_like_any_job():
    from factory.llm.structured import Job, run_jobs

    backend = Scripted([("{}", "stop"), ("turn one", "stop"), ("", "stop"), ("{}", "stop")])
    parse_json = json_parser({"type": "object"})
    second = Job(chat("second", seed=2), text_parser(3))
    first = Job(chat("first", seed=1), text_parser(3), lambda v: [second] if v.ok else [])
    done = run_jobs(backend, [Job(chat("other", seed=3), parse_json), first], max_retries=1)
    assert [v.request for v in done] == [chat("other", seed=3), chat("first", seed=1), chat("second", seed=2)]
    assert [(v.ok, v.attempts) for v in done] == [(True, 1), (True, 1), (False, 2)]
    assert done[2].reason == "shorter than 3 characters" and done[2].result.text == "{}"
    assert len(set(backend.seeds[2:])) == 2  # the follow-up's retry has a fresh seed


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
    from factory.llm import backend
    from factory.llm.config import TransformersConfig

    monkeypatch.setenv("FACTORY_CACHE", str(tmp_path))
    client = backend.load(TransformersConfig(), None)
    r = client.generate([chat("Name a US state.", temperature=0, max_tokens=8)])[0]
    assert r.text and "SmolLM2" in client.model_id
