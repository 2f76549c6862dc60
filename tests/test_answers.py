"""The answers stage: every mode on the tiny model, option shuffling mapped back, invalid answers kept as invalid,
logprob distributions equal to the backend's own scores, and multi-turn peers drawn from the same geography."""

from __future__ import annotations

import math

import pytest
from datasets import load_from_disk

from factory.llm.types import GenerationResult
from factory.recipe import load_recipe
from factory.runner import Runner
from factory.stage import StageContext
from factory.stages import answers


def recipe(tmp_path, tiny_path, answers_block: str, personas: bool = False) -> str:
    open_q = tmp_path / "open.csv"
    open_q.write_text("topic,question\nmoney,What would you do with an unexpected $500?\n")
    persona_stage = (
        """
  personas: {uses: "fake_personas:stage", inputs: [people], n: 4, styles: [descriptive, objective_table], skip: 1}
"""
        if personas
        else ""
    )
    path = tmp_path / "r.yaml"
    path.write_text(f"""\
name: a
seed: 0
backends:
  tiny: {{type: transformers, model: "{tiny_path}", batch_size: 8}}
stages:
  people: {{uses: meta_personas, geographies: [WY, VT], n_per_geography: 30}}
  election: {{uses: questions, sets: [election], files: [{open_q}]}}
{persona_stage}
  votes:
    uses: answers
    backend: tiny
{answers_block}""")
    return path


def build(path, runs):
    runner = Runner(load_recipe(path), runs_dir=runs, progress=False)
    runner.build()
    store = runner.store("votes")
    return load_from_disk(str(store.data_dir)).to_pandas(), store.manifest(), store


def test_fast_answers_keep_invalids_and_map_shuffled_options_back(tmp_path, tiny_path):
    block = """\
    inputs: [people, election]
    mode: fast
    sample: 6
    samples: 2
    shuffle_options: true
"""
    df, manifest, store = build(recipe(tmp_path, tiny_path, block), tmp_path / "runs")
    choice = df[df["mode"] == "fast"]
    assert len(choice) == 6 * 3 * 2  # persons x election questions x samples
    assert set(df["mode"]) == {"fast", "free_text"}
    assert len(df[df["mode"] == "free_text"]) == 6 * 2
    # invalid answers are rows with a reason and no choice; valid ones carry a choice among the options
    invalid = choice[~choice["valid"]]
    assert invalid["choice"].isna().all() and invalid["invalid_reason"].notna().all()
    valid = choice[choice["valid"]]
    assert valid["choice"].between(0, 1).all() and valid["invalid_reason"].isna().all()
    assert manifest["metrics"]["invalid"] == (~df["valid"]).sum()
    failures = load_from_disk(str(store.failures_dir)).to_pandas() if store.failures_dir.exists() else []
    assert len(failures) == (~df["valid"]).sum()
    # each person sees one order per question, the same for every sample; orders differ between persons
    orders = choice.groupby(["person_id", "question_id"])["option_order"].agg(lambda s: {tuple(o) for o in s})
    assert all(len(o) == 1 for o in orders)
    assert len({next(iter(o)) for o in orders}) == 2


def test_constrained_fast_answers_are_always_valid(tmp_path, tiny_path):
    block = """\
    inputs: [people, election]
    mode: fast
    sample: 4
    constrain: true
"""
    df, manifest, _ = build(recipe(tmp_path, tiny_path, block), tmp_path / "runs")
    choice = df[df["mode"] == "fast"]
    assert choice["valid"].all() and choice["choice"].between(0, 1).all()
    assert choice["text"].str.match(r"^Answer: [AB]$").all()


def test_logprob_distribution_is_the_backends_scores(tmp_path, tiny_path):
    from factory.llm.transformers_backend import TransformersBackend
    from factory.llm.types import ScoreRequest

    block = """\
    inputs: [people, election]
    mode: logprob
    sample: 3
    shuffle_options: true
"""
    path = recipe(tmp_path, tiny_path, block)
    df, manifest, _ = build(path, tmp_path / "runs")
    assert set(df["mode"]) == {"logprob"} and df["valid"].all() and df["choice"].isna().all()
    assert manifest["metrics"]["skipped_open"] == 3  # open questions cannot be scored
    for dist in df["distribution"]:
        assert math.isclose(sum(dist), 1.0, rel_tol=1e-5)
    # recompute one row by hand: score the same prompt, softmax, map shown positions back to original options
    row = df.iloc[0]
    people = load_from_disk(str(Runner(load_recipe(path), runs_dir=tmp_path / "runs").store("people").data_dir))
    questions = load_from_disk(str(Runner(load_recipe(path), runs_dir=tmp_path / "runs").store("election").data_dir))
    person = next(p for p in people if p["person_id"] == row["person_id"])
    question = next(q for q in questions if q["question_id"] == row["question_id"])
    from datasets import ClassLabel

    names = {c: f.names for c, f in people.features.items() if isinstance(f, ClassLabel)}
    import json

    from factory.personas.styles import facts

    item = answers._Item(
        person=person, geo=row["geography"], style="meta", persona=json.dumps(facts(person, names), indent=2),
        question=question, sample=0, order=list(row["option_order"]), seed=0, peers=[], round=0,
    )  # fmt: skip
    backend = TransformersBackend(str(tiny_path))
    (res,) = backend.score_choices([ScoreRequest.chat(answers._messages(answers.Options(backend="tiny"), item, "fast"),
                                                      ["Answer: A", "Answer: B"])])  # fmt: skip
    z = [math.exp(v) for v in res.logprobs]
    expected = [0.0, 0.0]
    for shown_at, original in enumerate(row["option_order"]):
        expected[original] = z[shown_at] / sum(z)
    assert list(row["distribution"]) == pytest.approx(expected, abs=1e-5)


def test_a_prompt_the_engine_cannot_score_is_an_invalid_row_and_its_neighbours_are_unaffected(tmp_path, tiny_path):
    block = """\
    inputs: [people, election]
    mode: logprob
    sample: 3
"""
    plain, _, _ = build(recipe(tmp_path, tiny_path, block), tmp_path / "plain")
    huge = tmp_path / "huge.csv"  # longer than the tiny model's 1,024 positions
    huge.write_text(f"id,topic,question,options\nhuge,essay,{'Why? ' * 1100},Yes|No\n")
    path = recipe(tmp_path, tiny_path, block)
    path.write_text(path.read_text().replace("files: [", f"files: [{huge}, "))
    df, manifest, store = build(path, tmp_path / "runs")
    bad = df[df["question_id"].str.endswith("huge")]
    assert len(bad) == 3 and not bad["valid"].any() and bad["distribution"].isna().all()
    assert bad["invalid_reason"].str.match(r"backend error: \d+ tokens to score, longer than the model's 1024").all()
    assert manifest["failures"] == 3 and manifest["failure_reasons"] == bad["invalid_reason"].value_counts().to_dict()
    rest = df[~df["question_id"].str.endswith("huge")].reset_index(drop=True)
    assert rest["valid"].all() and list(rest["question_id"]) == list(plain["question_id"])
    assert [list(d) for d in rest["distribution"]] == [list(d) for d in plain["distribution"]]


def test_reason_and_multi_turn_rounds_with_persona_styles(tmp_path, tiny_path):
    block = """\
    inputs: [people, personas, election]
    mode: multi_turn
    rounds: 1
    peers: 2
    max_tokens: 40
"""
    df, manifest, _ = build(recipe(tmp_path, tiny_path, block, personas=True), tmp_path / "runs")
    choice = df[df["mode"] == "multi_turn"]
    assert set(choice["round"]) == {0, 1}
    assert set(df["style"]) == {"meta", "descriptive", "objective_table"}
    # the 4 people with personas answer as themselves and in each style; a failed persona is counted, not answered
    assert df["person_id"].nunique() == 4
    assert manifest["metrics"]["missing_persona.objective_table"] == 1
    assert len(choice[choice["round"] == 1]) == (3 * 4 - 1) * 3
    assert len(choice[choice["round"] == 0]) == (3 * 4 - 1) * 3
    assert (df[df["mode"] == "free_text"]["round"] == 0).all()  # open questions are answered once


def test_peers_come_from_the_same_geography_and_never_oneself():
    ctx = StageContext(recipe="r", stage="votes", seed=0)
    q = {"question_id": "election/1", "options": ["X", "Y"], "kind": "choice"}
    people = [{"person_id": f"{g}-{i}", "weight": 1.0} for g in ("WY", "VT") for i in range(4)]
    previous = [
        {"person_id": p["person_id"], "geography": p["person_id"][:2], "style": "meta", "question_id": "election/1",
         "valid": True, "mode": "reason", "reasoning": f"reason of {p['person_id']}", "choice": 0}
        for p in people
    ]  # fmt: skip
    items = [
        answers._Item(person=p, geo=p["person_id"][:2], style="meta", persona="", question=q, sample=0,
                      order=[0, 1], seed=0, peers=[], round=1)
        for p in people
    ]  # fmt: skip
    answers._draw_peers(answers.Options(backend="b", peers=2), items, previous, 1, ctx)
    for it in items:
        assert len(it.peers) == 2
        assert all(s.startswith(f"reason of {it.geo}") for s in it.peers)
        assert f"reason of {it.person['person_id']}" not in it.peers
    again = [answers._Item(**{k: getattr(it, k) for k in answers._Item.__slots__}) for it in items]
    answers._draw_peers(answers.Options(backend="b", peers=2), again, previous, 1, ctx)
    assert [it.peers for it in again] == [it.peers for it in items]


class Scripted:
    """A backend client that answers from a script, for exact checks of parsing and mapping."""

    model_id = "scripted"
    calls = 0
    cache = None

    def __init__(self, replies):
        self.replies = list(replies)

    def generate(self, requests, follow=None):  # follow-ups (retries) in rounds, as remote backends run them
        from factory.llm.types import in_rounds

        return in_rounds(self._answer, requests, follow)

    def _answer(self, requests):
        return [GenerationResult(self.replies.pop(0), "stop", 10, 3) for _ in requests]


def test_parsed_letters_map_to_original_options_and_garbage_is_invalid():
    q = {"question_id": "q", "text": "Well?", "options": ["Yes", "No", "Maybe", "Refused"], "kind": "choice",
         "refusal_index": 3}  # fmt: skip
    person = {"person_id": "p", "weight": 2.0}
    items = [
        answers._Item(person=person, geo="WY", style="meta", persona="", question=q, sample=s, order=[2, 0, 1, 3],
                      seed=s, peers=[], round=0)
        for s in range(4)
    ]  # fmt: skip
    client = Scripted(["Answer: A", "Reasoning: I like it.\nAnswer: **C**", "Answer: E", ""])
    rows = answers._sampled(answers.Options(backend="b", mode="reason"), client, items, "reason", 0, lambda *a: None)
    assert [r["choice"] for r in rows] == [2, 1, None, None]  # A shows option 2 ('Maybe'); C shows option 1
    assert rows[1]["reasoning"] == "I like it."
    assert [r["valid"] for r in rows] == [True, True, False, False]
    assert rows[2]["invalid_reason"] and rows[3]["invalid_reason"]
    assert all(r["weight"] == 2.0 and r["geography"] == "WY" for r in rows)


def test_refusal_can_be_hidden():
    q = {"options": ["Yes", "No", "Refused"], "refusal_index": 2}
    assert answers._shown(q, show_refusal=True) == [0, 1, 2]
    assert answers._shown(q, show_refusal=False) == [0, 1]


def test_open_questions_spell_out_big_five_bands_and_base_has_no_persona():
    q = {"question_id": "q", "text": "How do you handle criticism?", "options": [], "kind": "open"}
    person = {"person_id": "p", "weight": 1.0, "openness": 0.9, "conscientiousness": 0.6, "extraversion": 0.35,
              "agreeableness": 0.25, "neuroticism": 0.35}  # fmt: skip
    opts = answers.Options(backend="b")
    meta = answers._Item(person=person, geo="WY", style="meta", persona="{}", question=q, sample=0, order=[], seed=0,
                         peers=[], round=0)  # fmt: skip
    text = answers._messages(opts, meta, "fast")[1]["content"]
    assert "- Openness: Very high (0.9)" in text and "- Agreeableness: Low (0.25)" in text
    assert "- Conscientiousness: High (0.6)" in text and "You are this person" in text
    base = answers._Item(**{**{k: getattr(meta, k) for k in answers._Item.__slots__}, "style": "base", "persona": None})
    text = answers._messages(opts, base, "fast")[1]["content"]
    assert "You are this person" not in text and "Openness" not in text
