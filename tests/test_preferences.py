"""The preferences stage: the exact pair rules on hand-made judgements and distributions, the margin filter,
deduplication, a split that keeps near duplicates together, the LLM judge's validation and kept failures, the
classifier judge on a tiny BERT, and the stage end to end on the tiny model in TRL's conversational format."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from datasets import load_from_disk

from factory.census.bigfive import TARGET_PRESETS
from factory.judging import judges
from factory.judging.judges import ClassifierJudgeOptions, Judgement, LLMJudgeOptions
from factory.judging.pairs import near_duplicate_groups, pick_test_questions
from factory.llm.types import GenerationResult
from factory.recipe import load_recipe
from factory.runner import Runner
from factory.stages import preferences

ROLES = TARGET_PRESETS["mbti_roles"]
AN, DI = ROLES["Analyst"], ROLES["Diplomat"]


def sim(t, v):  # the study's similarity, written out: exp(-5 * MSE)
    return math.exp(-5 * sum((a - b) ** 2 for a, b in zip(t, v)) / 5)


class FakeJudge:
    """Scores by answer text; 'broken' fails like an unparseable judge reply."""

    name = "fake-judge"

    def __init__(self, scores: dict[str, list[float]]):
        self.scores = scores
        self.seen: list[str] = []

    def judge(self, items):
        self.seen += [a for _, a in items]
        return [
            Judgement(None, None, "invalid JSON", raw="{oops")
            if a == "broken"
            else Judgement(self.scores[a], f"about {a}", None)
            for _, a in items
        ]


def _answer(pid, qid, style, text, sample=0):
    return {"person_id": pid, "question_id": qid, "style": style, "sample": sample, "text": text}


def _person(traits, age=30, state="Wyoming"):
    return {"traits": traits, "state": state, "age_band": "25 to 34 years", "row": {"age": age}, "names": {}}


def test_judge_rule_picks_best_own_and_worst_rival_with_margin_and_dedup():
    scores = {
        "an-good": AN, "an-bad": DI, "di-good": DI, "di-mid": [0.9, 0.5, 0.45, 0.9, 0.2],
        "base-1": [0.5] * 5, "base-2": [0.6, 0.6, 0.5, 0.6, 0.4],
        "close-own": [0.88, 0.6, 0.35, 0.25, 0.35], "close-base": [0.86, 0.6, 0.35, 0.25, 0.35],
    }  # fmt: skip
    rows = [
        _answer("p-an", "q/1", "meta", "an-good"), _answer("p-an", "q/1", "meta", "an-bad", 1),
        _answer("p-di", "q/1", "meta", "di-mid"), _answer("p-di", "q/1", "meta", "di-good", 1),
        _answer("p-an", "q/1", "base", "base-1"), _answer("p-di", "q/1", "base", "base-2"),
        _answer("p-di", "q/1", "base", "broken", 1),
        # q/2: the Analyst's only answer is barely better than the base answer: under the margin
        _answer("p-an", "q/2", "meta", "close-own"), _answer("p-an", "q/2", "base", "close-base"),
        # q/3 repeats q/1's text (case, punctuation): a duplicate prompt for both targets
        _answer("p-an", "q/3", "meta", "an-good"), _answer("p-di", "q/3", "meta", "di-good"),
        _answer("p-an", "q/3", "base", "base-1"),
    ]  # fmt: skip
    questions = {
        "q/1": {"text": "How do you handle criticism?"},
        "q/2": {"text": "What do you do on a free Sunday?"},
        "q/3": {"text": "how do you handle criticism"},
    }
    persons = {"p-an": _person(AN), "p-di": _person(DI)}
    judge = FakeJudge(scores)
    opts = preferences.JudgeRuleOptions(judge={"backend": "j"}, targets="mbti_roles", min_margin=0.05)
    out = preferences.judge_rule(opts, rows, persons, questions, judge, test={"q/2"})

    assert sorted(judge.seen) == sorted(r["text"] for r in rows)  # every answer judged once
    pairs = {(p["question_id"], p["target"]): p for p in out.data.to_list()}
    assert set(pairs) == {("q/1", "Analyst"), ("q/1", "Diplomat")}
    an = pairs[("q/1", "Analyst")]
    # Analyst: own answers an-good (sim 1) and an-bad; rivals base-1, base-2, di-mid, di-good: di-good is the worst
    assert an["chosen"] == [{"role": "assistant", "content": "an-good"}]
    assert an["rejected"] == [{"role": "assistant", "content": "di-good"}]
    assert an["chosen_score"] == pytest.approx(1.0)
    assert an["rejected_score"] == pytest.approx(sim(AN, DI), rel=1e-6)
    assert an["margin"] == pytest.approx(1 - sim(AN, DI), rel=1e-6)
    assert min(sim(AN, scores[t]) for t in ("base-1", "base-2", "di-mid")) > sim(AN, DI)
    # Diplomat: the Analyst's an-bad fits the Diplomat perfectly, so it is never the rejected one; an-good is
    di = pairs[("q/1", "Diplomat")]
    assert di["chosen"][0]["content"] == "di-good" and di["rejected"][0]["content"] == "an-good"
    assert (di["chosen_person_id"], di["rejected_person_id"], di["rejected_style"]) == ("p-di", "p-an", "meta")
    assert an["rejected_style"] == "meta" and an["split"] == "train"
    assert an["chosen_vector"] == pytest.approx(AN) and an["target_vector"] == pytest.approx(AN)
    # the prompt: a neutral instruction with the target's bands, then the bare question
    assert an["prompt"][0]["role"] == "system" and "- Agreeableness: Low (0.25)" in an["prompt"][0]["content"]
    assert an["prompt"][1] == {"role": "user", "content": "How do you handle criticism?"}
    assert an["judge"] == "fake-judge" and an["rule"] == "judge" and an["state"] == "Wyoming"

    dropped = out.extras["dropped"].to_list()
    reasons = sorted((d["question_id"], d["target"], d["reason"]) for d in dropped)
    assert reasons == [("q/2", "Analyst", "margin"), ("q/3", "Analyst", "duplicate"), ("q/3", "Diplomat", "duplicate")]
    q2 = next(d for d in dropped if d["question_id"] == "q/2")
    assert q2["margin"] == pytest.approx(sim(AN, scores["close-own"]) - sim(AN, scores["close-base"]), rel=1e-5)
    assert out.metrics["dropped.margin"] == 1 and out.metrics["dropped.duplicate"] == 2

    # the judge's failure is kept (judgements row and failures), and the answer takes part in no pair
    judged = out.extras["judgements"].to_list()
    assert len(judged) == len(rows)
    bad = [j for j in judged if not j["valid"]]
    assert len(bad) == 1 and bad[0]["scores"] is None and bad[0]["invalid_reason"] == "invalid JSON"
    assert out.failures == [{"reason": "judge: invalid JSON", "person_id": "p-di", "question_id": "q/1", "sample": 1,
                             "style": "base", "raw": "{oops"}]  # fmt: skip
    base = next(j for j in judged if j["style"] == "base" and j["valid"])
    assert base["target"] is None and base["similarity"] is None
    own = next(j for j in judged if j["person_id"] == "p-an" and j["question_id"] == "q/1" and j["sample"] == 1)
    assert own["target"] == "Analyst" and own["similarity"] == pytest.approx(sim(AN, DI), rel=1e-6)

    # with dedup off and no margin, q/2 and q/3 give pairs too; q/2 is in the test split
    opts = preferences.JudgeRuleOptions(judge={"backend": "j"}, targets="mbti_roles", min_margin=0, dedup_prompts=False)
    out = preferences.judge_rule(opts, rows, persons, questions, FakeJudge(scores), test={"q/2"})
    got = {(p["question_id"], p["target"]): p["split"] for p in out.data.to_list()}
    assert len(got) == 5 and got[("q/2", "Analyst")] == "test"


def test_persona_targets_group_equal_vectors_and_name_presets():
    from factory.judging.targets import assign

    names, vectors = assign(np.array([AN, DI, AN, [0.512, 0.3, 0.3, 0.3, 0.3]]), "persona")
    assert names == ["Analyst", "Diplomat", "Analyst", "vector_51_30_30_30_30"]
    assert vectors["vector_51_30_30_30_30"] == [0.51, 0.3, 0.3, 0.3, 0.3]
    names, _ = assign(np.array([[0.85, 0.55, 0.4, 0.3, 0.3], [0.3, 0.3, 0.85, 0.6, 0.2]]), "mbti_roles")
    assert names == ["Analyst", "Explorer"]  # the nearest named vector


def test_split_keeps_near_duplicates_on_one_side():
    items = [
        ("q/01", "What does trust mean to you?"),
        ("q/02", "What does trust mean to you personally?"),
        ("q/03", "WHAT does trust mean to you"),
        ("q/04", "How do you react when someone criticizes your work?"),
        ("q/05", "How do you spend a rainy afternoon at home?"),
        ("q/06", "What role does money play in your choices?"),
        ("q/07", "How do you make friends in a new city?"),
        ("q/08", "How do you make new friends in a new city?"),
    ]
    groups = near_duplicate_groups(items, 0.6)
    assert groups["q/02"] == groups["q/03"] == groups["q/01"] == "q/01"
    assert groups["q/08"] == "q/07" and groups["q/04"] == "q/04"
    assert near_duplicate_groups(list(reversed(items)), 0.6) == groups
    sizes = set()
    for seed in range(20):
        test = pick_test_questions(groups, 0.25, np.random.default_rng(seed))
        for root in set(groups.values()):
            members = {q for q, r in groups.items() if r == root}
            assert members <= test or not members & test
        sizes.add(len(test))
        assert test == pick_test_questions(groups, 0.25, np.random.default_rng(seed))
    assert min(sizes) >= 2 and len(sizes) > 1


def _full_row(age: int) -> dict:
    return {"age": age, "sex": "Female", "race_ethnicity": "White", "geography_name": "Ohio",
            "education": "Bachelor's degree", "employment_status": "Employed", "occupation": "None",
            "marital_status": "Never married", "household_income": "$50,000 to $74,999", "language": "English only",
            "citizenship": "U.S. citizen by birth", "veteran_status": "Nonveteran",
            "health_insurance": "Private"}  # fmt: skip


def test_opinion_rule_on_a_hand_made_group_distribution():
    q = {"question_id": "pew/1", "text": "Is the economy doing well?", "options": ["Yes", "No", "Refused"],
         "refusal_index": 2, "human_groups": [
             {"attribute": "AGE", "group": "18-29", "counts": [30.0, 60.0, 10.0]},
             {"attribute": "AGE", "group": "65+", "counts": [70.0, 20.0, 10.0]},
             {"attribute": "AGE", "group": "50-64", "counts": [10.0, 20.0, 70.0]},
             {"attribute": "SEX", "group": "Female", "counts": [1.0, 99.0, 0.0]}]}  # fmt: skip
    persons = {pid: {**_person(None, age), "row": _full_row(age)} for pid, age in
               (("young", 25), ("old", 70), ("mid", 40), ("refuser", 22), ("near", 55))}  # fmt: skip
    choices = [
        {"person_id": "young", "question_id": "pew/1", "pick": 0},  # No (.6) over Yes (.3)
        {"person_id": "old", "question_id": "pew/1", "pick": 0},  # Yes is the 65+ top answer: no pair
        {"person_id": "mid", "question_id": "pew/1", "pick": 1},  # 30-49 has no human data
        {"person_id": "refuser", "question_id": "pew/1", "pick": 2},  # No (.6) over Refused (.1)
        {"person_id": "near", "question_id": "pew/1", "pick": 0},  # 50-64: top is No (.2; never Refused)
    ]
    opts = preferences.OpinionRuleOptions(group_attribute="AGE", min_margin=0.15)
    out = preferences.opinion_rule(opts, choices, persons, {"pew/1": q}, test=set())
    pairs = {p["chosen_person_id"]: p for p in out.data.to_list()}
    assert set(pairs) == {"young", "refuser"}
    young = pairs["young"]
    assert young["chosen"] == [{"role": "assistant", "content": "Answer: B. No"}]
    assert young["rejected"] == [{"role": "assistant", "content": "Answer: A. Yes"}]
    assert young["margin"] == pytest.approx(0.3) and young["chosen_score"] == pytest.approx(0.6)
    assert young["target"] == "AGE=18-29" and young["target_vector"] == pytest.approx([0.3, 0.6, 0.1])
    assert young["judge"] == "human_groups:AGE" and young["rule"] == "opinion"
    assert pairs["refuser"]["rejected"][0]["content"] == "Answer: C. Refused"
    user = young["prompt"][1]["content"]
    assert '"age": 25' in user and "A. Yes" in user and "C. Refused" in user and "economy" in user
    why = {d["person_id"]: d["reason"] for d in out.extras["dropped"].to_list()}
    assert why == {"old": "choice is the group's top answer", "mid": "no human answers for the group",
                   "near": "margin"}  # fmt: skip


class Scripted:
    """A backend client answering from a script; records the sampling of each request."""

    model_id = "scripted"
    cache = None
    calls = 0

    def __init__(self, replies):
        self.replies = list(replies)
        self.sampling = []

    def generate(self, requests, follow=None):  # follow-ups (retries) in rounds, as remote backends run them
        from factory.llm.types import in_rounds

        return in_rounds(self._answer, requests, follow)

    def _answer(self, requests):
        self.sampling += [r.sampling for r in requests]
        return [GenerationResult(self.replies.pop(0), "stop", 10, 5) for _ in requests]


def _reply(scores, rationale="Calm, organised, brief."):
    return json.dumps({"rationale": rationale, "scores": dict(zip(judges.TRAITS, scores))})


def test_llm_judge_validates_accepts_integers_and_keeps_failures():
    replies = [
        _reply([0, 1, 0.5, 1, 0]),  # integers 0 and 1 are scores (the study's validator rejected them)
        _reply([0.5, 1.5, 0.5, 0.5, 0.5]),  # out of range: re-asked at the retry temperature...
        _reply([0.2] * 5, "x" * 61),  # rationale too long: re-asked...
        "not json",  # ... (b) a failure again: the last attempt's reason is kept
        _reply([0.3] * 5),  # ... (c) then fine
    ]
    client = Scripted(replies)
    judge = judges.LLMJudge(client, LLMJudgeOptions(backend="j", max_retries=1, rationale_chars=60))
    got = judge.judge([("q", "a"), ("q", "b"), ("q", "c")])
    assert got[0].ok and got[0].scores == [0.0, 1.0, 0.5, 1.0, 0.0] and got[0].attempts == 1
    assert not got[1].ok and got[1].reason.startswith("invalid JSON") and got[1].attempts == 2
    assert got[2].ok and got[2].scores == [0.3] * 5 and got[2].attempts == 2
    assert [s.temperature for s in client.sampling] == [0.0, 0.0, 0.0, 0.7, 0.7]
    assert client.sampling[3].seed != client.sampling[1].seed
    assert judge.name.startswith("llm:scripted#") and len(judge.name.split("#")[1]) == 12
    other = judges.LLMJudge(client, LLMJudgeOptions(backend="j", max_retries=1, rationale_chars=80))
    assert other.name != judge.name  # the schema is part of what judges


def test_classifier_judge_on_a_tiny_bert(tmp_path):
    from tiny_classifier import build_tiny_classifier
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = build_tiny_classifier(tmp_path / "cls", labels=["agreeableness", "conscientiousness", "extraversion",
                                                           "neuroticism", "openness"])  # fmt: skip
    judge = judges.ClassifierJudge(ClassifierJudgeOptions(model=str(path)))
    texts = ["I love meeting new people.", "I plan every detail.", "word " * 200, ""]
    got = judge.judge([("q", t) for t in texts])
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path)
    with torch.no_grad():
        probs = torch.sigmoid(model(**tok(texts[:2], padding=True, return_tensors="pt")).logits).tolist()
    order = [4, 1, 2, 0, 3]  # the model's outputs are A, C, E, N, O (id2label): O is output 4
    for j, p in zip(got, probs):
        assert j.ok and j.scores == pytest.approx([p[i] for i in order], abs=1e-6)
    assert got[2].reason == "longer than the classifier's 128 tokens" and got[3].reason == "empty answer"
    assert (
        judge.name.startswith("classifier:")
        and judge.name
        != judges.ClassifierJudge(ClassifierJudgeOptions(model=str(path), labels=list(judges.TRAITS))).name
    )


def test_preferences_end_to_end_on_the_tiny_model(tmp_path, tiny_path):
    qfile = tmp_path / "open.csv"
    qfile.write_text(
        "topic,question\n"
        "trust,What does trust mean to you?\n"
        "trust,What does trust mean to you personally?\n"
        "money,What would you do with an unexpected $500?\n"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
name: p
seed: 0
backends:
  tiny: {{type: transformers, model: "{tiny_path}", batch_size: 16}}
stages:
  people:
    {{uses: meta_personas, geographies: [WY], n_per_geography: 4, bigfive: {{mode: targets, targets: mbti_roles}}}}
  questions: {{uses: questions, files: [{qfile}]}}
  answers: {{uses: "fake_dpo_inputs:free_text_stage", inputs: [people, questions], n: 2, samples: 1}}
  pairs:
    uses: preferences
    inputs: [questions, answers, people]
    judge: {{backend: tiny, max_retries: 1, max_tokens: 160, rationale_chars: 20}}
    targets: mbti_roles
    min_margin: 0
    test_share: 0.34
""")
    runner = Runner(load_recipe(recipe), runs_dir=tmp_path / "runs", progress=False)
    runner.build()
    store = runner.store("pairs")
    data = load_from_disk(str(store.data_dir))
    manifest = store.manifest()
    answers = load_from_disk(str(runner.store("answers").data_dir)).to_pandas()
    judged = load_from_disk(str(store.dir / "judgements")).to_pandas()

    valid = answers[answers["valid"]]
    assert len(judged) == len(valid) and set(judged["style"]) == {"meta", "base"}
    failures = load_from_disk(str(store.failures_dir)).to_pandas() if store.failures_dir.exists() else []
    assert len(failures) == (~judged["valid"]).sum() == manifest["metrics"]["judge_failures"]
    ok = judged[judged["valid"]]
    assert all(len(s) == 5 and all(0 <= x <= 1 for x in s) for s in ok["scores"])
    assert (ok[ok["style"] == "meta"]["target"].isin(list(ROLES))).all()

    assert len(data) > 0
    assert set(preferences.features()) == set(data.column_names)
    row = data[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
    assert row["margin"] == pytest.approx(row["chosen_score"] - row["rejected_score"], abs=1e-5)
    # the judge's identity is recorded with every pair and in the summary
    assert set(data["judge"]) == set(judged["judge"]) == {manifest["summary"]["judge"]}
    assert manifest["summary"]["judge"].startswith(f"llm:{tiny_path}#")
    # near duplicates (the two trust questions) are on one side of the split
    questions = load_from_disk(str(runner.store("questions").data_dir))
    text_of = dict(zip(questions["question_id"], questions["text"]))
    assert len({s for q, s in zip(data["question_id"], data["split"]) if "trust" in text_of[q]}) <= 1
    summary = manifest["summary"]
    assert summary["pairs"] == len(data) and 0 <= summary["judge_failure_rate"] <= 1
    assert sum(sum(v.values()) for v in summary["pairs_by_target"].values()) == len(data)
    assert set(summary["judge_mean_scores_base"]) == set(judges.TRAITS)

    # TRL reads the rows as conversational preference data
    trl_data = pytest.importorskip("trl.data_utils")
    from transformers import AutoTokenizer

    example = {k: row[k] for k in ("prompt", "chosen", "rejected")}
    assert trl_data.is_conversational(example)
    text = trl_data.apply_chat_template(example, AutoTokenizer.from_pretrained(tiny_path))
    assert text["prompt"].endswith("<|im_start|>assistant\n") and row["chosen"][0]["content"] in text["chosen"]


def test_similarity_kinds():
    from factory.judging.targets import similarity

    t, s = [0.9, 0.6, 0.35, 0.25, 0.35], [0.5, 0.5, 0.5, 0.5, 0.5]
    assert similarity(t, s) == pytest.approx(sim(t, s))
    assert similarity(t, s, "exp_mse", alpha=1) == pytest.approx(math.exp(-0.2775 / 5))
    assert similarity(t, s, "neg_mae") == pytest.approx(-1.05 / 5)
    assert similarity(t, s, "cosine") == pytest.approx(np.dot(t, s) / np.linalg.norm(t) / np.linalg.norm(s))
    assert similarity(t, [0.0] * 5, "cosine") == 0.0
