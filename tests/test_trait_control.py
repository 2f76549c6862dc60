"""The trait_control stage: base and a LoRA adapter (built here with peft on the tiny model) answer the same
requests, truncated answers are failures and never judged, the report's numbers match a hand computation from
the judgements, and end to end the target comes from the training pairs and a changed judge is called out."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from datasets import load_from_disk

from factory.census.bigfive import TARGET_PRESETS
from factory.judging import control
from factory.judging.judges import Judgement
from factory.recipe import load_recipe
from factory.runner import Runner
from factory.stages import trait_control

AN = TARGET_PRESETS["mbti_roles"]["Analyst"]
QUESTIONS = [
    {"question_id": "q/1", "text": "What does trust mean to you?"},
    {"question_id": "q/2", "text": "How do you spend a free Sunday?"},
]


class HashJudge:
    """Scores from a hash of the answer: deterministic, different for different texts."""

    name = "hash-judge"

    def __init__(self):
        self.seen: list[str] = []

    def judge(self, items):
        self.seen += [a for _, a in items]
        out = []
        for _, a in items:
            h = hashlib.sha256(a.encode()).digest()
            out.append(Judgement([h[i] / 255 for i in range(5)], "hashed", None))
        return out


@pytest.fixture(scope="module")
def adapter(tiny_path, tmp_path_factory):
    from fake_dpo_inputs import save_adapter

    path = tmp_path_factory.mktemp("train") / "artifacts" / "adapter"
    save_adapter(str(tiny_path), path)
    assert json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_path)
    return path


def test_base_and_adapter_answer_the_same_requests_and_cut_answers_are_never_judged(tiny_path, adapter, tmp_path):
    from factory.judging.prompts import trait_prompt
    from factory.judging.targets import bands
    from factory.llm.transformers_backend import TransformersBackend
    from factory.llm.types import GenerationRequest, Sampling

    opts = trait_control.Options(judge={"backend": "unused"}, samples=2, max_tokens=96)
    judge = HashJudge()
    out = trait_control.evaluate(opts, str(tiny_path), adapter, QUESTIONS, {"Analyst": AN}, judge, seed=3,
                                 cache_path=tmp_path / "requests.sqlite")  # fmt: skip
    answers = out.extras["answers"].to_list()
    assert len(answers) == 2 * 2 * 2  # questions x samples x models
    base = {(a["question_id"], a["sample"]): a for a in answers if a["model"] == "base"}
    tuned = {(a["question_id"], a["sample"]): a for a in answers if a["model"] == "adapter"}
    assert all(base[k]["seed"] == tuned[k]["seed"] for k in base)  # the same seeds for both models
    assert any(base[k]["text"] != tuned[k]["text"] for k in base)  # the adapter changes what is written
    # the base answers are what the plain base model writes for the same prompt and seed
    first = base[("q/1", 0)]
    request = GenerationRequest.chat(
        trait_prompt(bands(AN), QUESTIONS[0]["text"]), Sampling(0.7, 0.9, 96, (), first["seed"])
    )
    assert TransformersBackend(str(tiny_path)).generate([request])[0].text == first["text"]

    # complete answers are judged, once each; answers cut at max_tokens are failures and never judged
    complete = [a for a in answers if a["finish_reason"] == "stop"]
    cut = [a for a in answers if a["finish_reason"] == "length"]
    assert complete and cut, "the tiny model both stops and rambles past 96 tokens on these seeds"
    assert sorted(judge.seen) == sorted(a["text"] for a in complete)
    assert all(not a["valid"] and a["invalid_reason"] == "truncated at max_tokens" for a in cut)
    assert sum(f["reason"] == "truncated at max_tokens" for f in out.failures) == len(cut)
    assert len(out.data) == 5 * len(complete)
    for a in complete:
        assert a["valid"] and a["similarity"] == pytest.approx(
            math.exp(-5 * np.mean((np.array(a["scores"]) - AN) ** 2)), 1e-5
        )
    report = control.report(answers, {"Analyst": AN}, "exp_mse", 5.0)["Analyst"]
    assert sum(report["models"][m]["truncated"] for m in ("base", "adapter")) == len(cut)
    assert sum(report["models"][m]["judged"] for m in ("base", "adapter")) == len(complete)

    # a rerun answers from the request cache, byte for byte
    again = trait_control.evaluate(opts, str(tiny_path), adapter, QUESTIONS, {"Analyst": AN}, HashJudge(), seed=3,
                                   cache_path=tmp_path / "requests.sqlite")  # fmt: skip
    assert [a["text"] for a in again.extras["answers"].to_list()] == [a["text"] for a in answers]
    assert again.metrics["backend_calls"] == 0


def test_report_numbers_by_hand():
    t = [0.9, 0.6, 0.35, 0.25, 0.35]
    rows = [
        {"target": "A", "model": "base", "scores": [0.5, 0.5, 0.5, 0.5, 0.5], "invalid_reason": None},
        {"target": "A", "model": "base", "scores": [0.7, 0.7, 0.3, 0.7, 0.1], "invalid_reason": None},
        {"target": "A", "model": "base", "scores": None, "invalid_reason": "truncated at max_tokens"},
        {"target": "A", "model": "adapter", "scores": [0.9, 0.6, 0.35, 0.25, 0.35], "invalid_reason": None},
        {"target": "A", "model": "adapter", "scores": [0.7, 0.4, 0.45, 0.65, 0.35], "invalid_reason": None},
        {"target": "A", "model": "adapter", "scores": None, "invalid_reason": "judge: invalid JSON"},
    ]
    r = control.report(rows, {"A": t}, "exp_mse", 5.0)["A"]
    base, tuned = r["models"]["base"], r["models"]["adapter"]
    assert (base["answers"], base["judged"], base["truncated"], base["failed"]) == (3, 2, 1, 1)
    assert (tuned["answers"], tuned["judged"], tuned["truncated"], tuned["failed"]) == (3, 2, 0, 1)
    assert list(base["mean"].values()) == pytest.approx([0.6, 0.6, 0.4, 0.6, 0.3])
    assert list(base["std"].values()) == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.2])
    assert list(tuned["mean"].values()) == pytest.approx([0.8, 0.5, 0.4, 0.45, 0.35])
    # per answer, then averaged: MSEs of the base answers are (0.16+0.01+0.0225+0.0625+0.0225)/5 = 0.0555 and
    # (0.04+0.01+0.0025+0.2025+0.0625)/5 = 0.0635; of the adapter's 0 and (0.04+0.04+0.01+0.16+0)/5 = 0.05
    assert base["similarity"] == pytest.approx((math.exp(-5 * 0.0555) + math.exp(-5 * 0.0635)) / 2)
    assert tuned["similarity"] == pytest.approx((1 + math.exp(-5 * 0.05)) / 2)
    assert base["mae"] == pytest.approx((1.05 / 5 + 1.05 / 5) / 2)
    assert tuned["mae"] == pytest.approx((0 + 0.9 / 5) / 2)
    assert tuned["euclidean"] == pytest.approx(math.sqrt(0.25) / 2)
    # toward the target: O (0.6 -> 0.8, target 0.9) yes; C (0.6 -> 0.5, target 0.6) no; E (0.4 -> 0.4) no;
    # A (0.6 -> 0.45, target 0.25) yes; N (0.3 -> 0.35, target 0.35) yes
    assert [v["toward"] for v in r["traits"].values()] == [True, False, False, True, True]
    assert r["moved_toward_share"] == pytest.approx(0.6)
    assert r["traits"]["openness"]["delta"] == pytest.approx(0.2)


def test_trait_control_end_to_end_checks_the_judge_against_the_pairs(tmp_path, tiny_path):
    from tiny_classifier import build_tiny_classifier

    cls = build_tiny_classifier(tmp_path / "cls")
    qfile = tmp_path / "open.csv"
    qfile.write_text("topic,question\ntrust,What does trust mean to you?\nmoney,What would you do with $500?\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
name: tc
seed: 0
stages:
  people:
    {{uses: meta_personas, geographies: [WY], n_per_geography: 4, bigfive: {{mode: targets, targets: mbti_roles}}}}
  questions: {{uses: questions, files: [{qfile}]}}
  answers: {{uses: "fake_dpo_inputs:free_text_stage", inputs: [people, questions], n: 2, samples: 2}}
  pairs:
    uses: preferences
    inputs: [answers, people, questions]
    judge: {{kind: classifier, model: "{cls}"}}
    targets: mbti_roles
    min_margin: 0
    test_share: 0
  adapter: {{uses: "fake_dpo_inputs:train_dpo", inputs: [pairs], model: "{tiny_path}"}}
  control:
    uses: trait_control
    inputs: [adapter, questions]
    judge: {{kind: classifier, model: "{cls}"}}
    max_tokens: 96
  other_judge:
    uses: trait_control
    inputs: [questions, adapter]
    judge: {{kind: classifier, model: "{cls}", labels: [neuroticism, openness, conscientiousness, extraversion,
                                                    agreeableness]}}
    target: Diplomat
    sample: 1
    max_tokens: 96
""")
    runner = Runner(load_recipe(recipe), runs_dir=tmp_path / "runs", progress=False)
    runner.build()
    pairs = runner.store("pairs").manifest()["summary"]
    store = runner.store("control")
    manifest = store.manifest()
    summary = manifest["summary"]
    # by default every target of the training pairs is evaluated, with the pairs' own target vectors
    assert set(summary["targets"]) == set(pairs["pairs_by_target"]) == {"Analyst", "Diplomat"}
    assert summary["targets"]["Diplomat"]["target_vector"] == TARGET_PRESETS["mbti_roles"]["Diplomat"]
    assert summary["judge"] == pairs["judge"] and summary["judge_check"] == "same judge as the pairs"
    # the CSV questions are both training and evaluation questions here: that is called out
    assert summary["warnings"] == ["WARNING: 2 of 2 evaluated questions were training prompts"]
    assert (store.dir / "artifacts" / "trait_control.png").stat().st_size > 0
    data = load_from_disk(str(store.data_dir)).to_pandas()
    answers = load_from_disk(str(store.dir / "answers")).to_pandas()
    assert len(answers) == 2 * 2 * 2  # targets x questions x models
    assert len(data) == 5 * answers["valid"].sum()
    for (target, model), rows in data.groupby(["target", "model"]):
        means = rows.groupby("trait")["score"].mean()
        got = summary["targets"][target]["models"][model]["mean"]
        assert {k: got[k] for k in means.index} == pytest.approx(means.to_dict(), abs=1e-6)
    # another judge than the pairs': said so in the summary, not silently compared
    other = runner.store("other_judge").manifest()["summary"]
    assert set(other["targets"]) == {"Diplomat"} and other["judge"] != pairs["judge"]
    assert [w for w in other["warnings"] if "judged by" in w] == [
        f"WARNING: the pairs were judged by {pairs['judge']} but this evaluation by {other['judge']}: scores from "
        "different judges are not comparable"
    ]


def test_targets_are_found_through_a_review_stage(tmp_path):
    """An adapter trained on reviewed pairs: trait control reads the reviewed rows (what was trained on) and the
    judge of the preferences stage behind them."""
    from datasets import Dataset

    from factory.store import MARKER, Upstream

    def stage(name: str, uses: str, inputs: dict, rows: list[dict] | None = None):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"uses": uses, "inputs": inputs, "summary": {"judge": name}}))
        (folder / MARKER).write_text("{}")
        if rows is not None:
            Dataset.from_list(rows).save_to_disk(str(folder / "data"))
        return {"path": str(folder), "fingerprint": name}

    row = {"target": "Diplomat", "target_vector": [0.9, 0.5, 0.45, 0.9, 0.6], "rule": "judge", "split": "train"}
    pairs = stage("pairs", "preferences", {}, [row, {**row, "target": "Analyst"}])
    reviewed = stage("reviewed", "review", {"pairs": pairs}, [{**row, "review_status": "agreed"}])
    adapter = Upstream("adapter", "adapter", stage("adapter", "train_dpo", {"reviewed": reviewed})["path"])
    data, manifest = trait_control.pairs_stage(adapter)
    assert data["review_status"] == ["agreed"] and manifest["summary"]["judge"] == "pairs"
    found = trait_control.resolve_targets(trait_control.Options(judge={"backend": "b"}), adapter)
    assert list(found) == ["Diplomat"]
