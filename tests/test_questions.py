"""The questions stage: shipped sets load with the right counts and data; user files; selection; errors."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from factory.errors import DataError
from factory.questions.sets import load_opinionqa, load_personality, load_seed_set, normalize
from factory.recipe import load_recipe
from factory.runner import Runner


def run_questions(write_recipe, tmp_path, body: str, *overrides: str):
    path = write_recipe(f"name: q\nseed: 0\nstages:\n  q:\n    uses: questions\n{body}")
    runner = Runner(load_recipe(path, list(overrides)), runs_dir=tmp_path / "runs", progress=False)
    runner.build()
    store = runner.store("q")
    return load_from_disk(str(store.data_dir)), store.manifest()


@pytest.fixture(scope="module")
def opinionqa():
    return load_opinionqa()


def test_opinionqa_counts(opinionqa):
    assert len(opinionqa) == 1494
    with_human = [r for r in opinionqa if r["human_distribution"] is not None]
    assert len(with_human) == 684
    assert sum(r["refusal_index"] is not None for r in opinionqa) == 1487


def test_opinionqa_options_fixed_where_pew_csv_split_them(opinionqa):
    gun = next(r for r in opinionqa if r["source_id"] == "GUN_W26")
    assert gun["options"] == ["Yes, I own a gun", "No, I don't own any guns", "Refused"]
    assert gun["ordinal"] == [1.0, 2.0, None]
    assert gun["human_distribution"][0] == pytest.approx(1329 / 4168, abs=1e-6)


def test_opinionqa_distributions_are_consistent(opinionqa):
    for r in opinionqa:
        if r["human_distribution"] is None:
            assert r["human_groups"] is None
            continue
        assert len(r["human_distribution"]) == len(r["options"])
        assert sum(r["human_distribution"]) == pytest.approx(1.0)
        # the overall counts are the sum over the SEX groups (how OpinionQA built them)
        sex = [g["counts"] for g in r["human_groups"] if g["attribute"] == "SEX"]
        total = [sum(c) for c in zip(*sex)]
        assert [t / r["human_n"] for t in total] == pytest.approx(r["human_distribution"], abs=1e-3)
        assert all(len(g["counts"]) == len(r["options"]) for g in r["human_groups"])


def test_opinionqa_ordinals_skip_non_ordinal_options(opinionqa):
    r = next(r for r in opinionqa if r["source_id"] == "WANTMOVE_W32")
    assert r["options"][2:] == ["Not sure", "Refused"] and r["ordinal"] == [1.0, 2.0, None, None]


def test_seed_set_counts():
    counts = {
        k: len(load_seed_set(k))
        for k in ("election", "climate", "customer", "education", "entertainment", "technology")
    }
    assert counts == {"election": 3, "climate": 6, "customer": 5, "education": 6, "entertainment": 7, "technology": 4}
    election = load_seed_set("election")
    assert election[0]["options"] == ["Donald Trump", "Hillary Clinton"] and election[0]["kind"] == "choice"


def test_personality_set_dedups_to_unique_questions(write_recipe, tmp_path):
    raw = load_personality()
    assert len(raw) == 20000
    assert len({normalize(r["text"]) for r in raw}) == 12640
    ds, manifest = run_questions(write_recipe, tmp_path, "    sets: [personality]\n")
    assert len(ds) == 12640 and manifest["metrics"]["duplicates_removed"] == 7360
    assert len(set(ds["topic"])) == 200 and set(ds["kind"]) == {"open"}
    assert len(set(ds["question_id"])) == len(ds)


def test_stage_counts_with_and_without_dedup(write_recipe, tmp_path):
    ds, _ = run_questions(write_recipe, tmp_path, "    sets: [opinionqa]\n    dedup: false\n")
    assert len(ds) == 1494 and sum(d is not None for d in ds["human_distribution"]) == 684
    ds, manifest = run_questions(write_recipe, tmp_path, "    sets: [opinionqa]\n")
    assert len(ds) == 1489 and sum(d is not None for d in ds["human_distribution"]) == 684  # repeats without data
    ds, _ = run_questions(write_recipe, tmp_path, "    sets: [opinionqa]\n    with_human_distribution: true\n")
    assert len(ds) == 684


def test_schema_types(write_recipe, tmp_path):
    ds, _ = run_questions(write_recipe, tmp_path, "    sets: [opinionqa]\n    ids: [GUN_W26]\n")
    f = ds.features
    assert f["options"].feature.dtype == "string" and f["ordinal"].feature.dtype == "float32"
    assert f["refusal_index"].dtype == "int32" and f["human_n"].dtype == "int64"
    row = ds[0]
    assert row["question_id"] == "opinionqa/GUN_W26" and row["refusal_index"] == 2 and row["human_n"] == 4168
    assert {g["attribute"] for g in row["human_groups"]} >= {"AGE", "SEX", "POLPARTY", "RACE", "INCOME"}


def test_seeded_sample_is_reproducible_and_seed_dependent(write_recipe, tmp_path):
    body = "    sets: [opinionqa]\n    sample: 25\n"
    a, _ = run_questions(write_recipe, tmp_path / "a", body)
    b, _ = run_questions(write_recipe, tmp_path / "b", body)
    c, _ = run_questions(write_recipe, tmp_path / "c", body, "seed=1")
    assert a["question_id"] == b["question_id"] and a["question_id"] != c["question_id"]
    assert len(a) == 25


def test_topic_and_id_selection(write_recipe, tmp_path):
    ds, _ = run_questions(write_recipe, tmp_path, "    sets: [personality]\n    topics: [sense of humor]\n")
    assert set(ds["topic"]) == {"Sense of humor"} and len(ds) > 10
    ds, _ = run_questions(
        write_recipe, tmp_path / "ids", "    sets: [election, climate]\n    ids: [election/2, climate/1]\n"
    )
    assert ds["question_id"] == ["election/2", "climate/1"]


def test_ambiguous_bare_id_is_an_error(write_recipe, tmp_path, cli):
    path = write_recipe("name: q\nstages:\n  q: {uses: questions, sets: [election, climate], ids: ['1']}\n")
    result = cli("build", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "stages.q.ids: '1' is ambiguous: election/1, climate/1" in result.stderr


def test_unknown_topic_is_an_error(write_recipe, tmp_path, cli):
    path = write_recipe("name: q\nstages:\n  q: {uses: questions, sets: [personality], topics: [sense of humour]}\n")
    result = cli("build", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "stages.q.topics: 'sense of humour' matches no question (did you mean 'Sense of humor'?)" in result.stderr


def test_user_files_json_and_csv(write_recipe, tmp_path):
    (tmp_path / "mine.json").write_text(
        json.dumps(
            {
                "topic_1": {
                    "question_id": "7",
                    "topic": "Tea or coffee?",
                    "candidates": {"A": {"stance": "Tea"}, "B": {"stance": "Coffee"}},
                },
            }
        )
    )
    (tmp_path / "open.csv").write_text(
        "topic,question,options\n"
        "food,What did you eat today?,\n"
        "food,  What did you eat today? ,\n"
        "city,Do you like your city?,Yes|No|Refused\n"
    )
    ds, manifest = run_questions(write_recipe, tmp_path, "    files: [mine.json, open.csv]\n")
    assert ds["source"] == ["mine", "open", "open"]
    assert ds[0]["question_id"] == "mine/7" and ds[0]["options"] == ["Tea", "Coffee"]
    assert ds[1]["kind"] == "open" and ds[2]["refusal_index"] == 2
    assert manifest["metrics"]["duplicates_removed"] == 1


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("bad.json", "{not json", "invalid JSON at line 1"),
        ("bad.json", json.dumps({"t": {"question_id": "1", "topic": "x"}}), "t.candidates: missing"),
        (
            "bad.json",
            json.dumps({"t": {"question_id": "1", "topic": "x", "candidates": {"A": {"x": 1}}}}),
            "t.candidates.A.stance: missing or not text",
        ),
        ("bad.csv", "topic,text\na,b\n", "missing column 'question' (have: topic, text)"),
        ("bad.csv", "topic,question\na,\n", "bad.csv:2: empty question"),
        ("bad.csv", "topic,question,options\na,b,OnlyOne\n", "a choice question needs at least two options"),
        ("bad.txt", "hello", "unsupported question file"),
    ],
)
def test_bad_user_files_name_the_file(write_recipe, tmp_path, cli, name, content, message):
    (tmp_path / name).write_text(content)
    path = write_recipe(f"name: q\nstages:\n  q: {{uses: questions, files: [{name}]}}\n")
    result = cli("build", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and name in line and message in line


def test_duplicate_ids_across_files_are_an_error(tmp_path):
    from factory.questions.sets import read_csv

    (tmp_path / "a.csv").write_text("topic,question,id\nx,One?,1\nx,Two?,1\n")
    from factory.options import DataFile
    from factory.stage import StageContext
    from factory.stages import questions

    opts = questions.Options(files=[DataFile("a.csv", tmp_path / "a.csv")])
    with pytest.raises(DataError, match="question id 'a/1' appears twice"):
        questions.run(opts, {}, StageContext("r", "q", 0))
    assert len(read_csv(tmp_path / "a.csv", "a")) == 2


# --- generated questions ------------------------------------------------------------------------------------------


def test_default_output_has_no_split_column(write_recipe, tmp_path):
    ds, manifest = run_questions(write_recipe, tmp_path, "    sets: [election]\n")
    assert "split" not in ds.column_names and set(manifest["metrics"]) == {"loaded", "duplicates_removed", "selected"}


@pytest.mark.parametrize(
    "text,reason",
    [
        ("How do you usually react when a friend criticizes your work?", None),
        ("What does trust mean to you?", None),  # exactly 5 words
        ("Why do you trust?", "fewer than 5 words"),
        ("How do you react to criticism.", "does not end with '?'"),
        ("Do you trust your neighbours with your keys?", "yes/no question"),
        ("Would you rather save money or spend it now?", "yes/no question"),
        ("\u201cDon\u2019t you think money changes people over time?", "yes/no question"),
        ("Have you ever lent money to a friend?", "yes/no question"),
        ("Is honesty always the best policy for you?", "yes/no question"),
        ("What " + "really " * 59 + "matters?", "more than 60 words"),
        ("What " + "really " * 58 + "matters?", None),  # exactly 60 words
    ],
)
def test_check_question(text, reason):
    from factory.questions.generate import check_question

    assert check_question(text) == reason


def test_duplicate_index_exact_and_near():
    from factory.questions.sets import DuplicateIndex, jaccard

    index = DuplicateIndex(0.8)
    index.add("a", "What does trust mean to you?")
    index.add("b", "How do you usually react when someone criticizes your work?")
    assert index.match("  what does TRUST mean to you ") == ("exact", "a", 1.0)
    kind, qid, sim = index.match("What does trust mean to you personally?")
    assert (
        (kind, qid) == ("near", "a")
        and sim == pytest.approx(jaccard("What does trust mean to you?", "What does trust mean to you personally?"))
        and sim >= 0.8
    )
    assert index.match("How do you usually react when someone praises your work?") is None  # 0.73
    assert index.match("Which childhood memory shaped how you handle money today?") is None
    assert index.match("!!!") is None and len(index) == 2
    assert jaccard("What does trust mean to you?", "What does trust mean to you?") == 1.0


def test_pool_keeps_valid_unique_questions_and_records_the_rest():
    """Hand-written model answers through the post-processing: exact ids kept, exact reasons for the rest."""
    from factory.questions.generate import QuestionPool

    pool = QuestionPool(0.8, known=[("personality/q00001", "What makes you laugh the most?")])
    kept = pool.offer(
        "Trust in others",
        [
            "1. What does trust mean to you?",
            "Do you trust your neighbours?",
            "What makes you laugh the most",
            "What makes you laugh the most?",
            "How has a betrayal changed the way you trust new people?",
        ],
        call=0,
    )
    assert kept == ["generated/trust-in-others/1", "generated/trust-in-others/2"]
    kept = pool.offer(
        "Money",
        [
            "What does trust mean to you personally?",
            "  How has a betrayal changed the way you trust NEW people? ",
            "What did your parents teach you about saving money?",
        ],
        call=0,
    )
    assert kept == ["generated/money/1"]
    assert [(f["topic"], f["reason"]) for f in pool.failures] == [
        ("Trust in others", "yes/no question"),
        ("Trust in others", "does not end with '?'"),
        ("Trust in others", "duplicate of personality/q00001"),
        ("Money", "near-duplicate of generated/trust-in-others/1"),
        ("Money", "duplicate of generated/trust-in-others/2"),
    ]
    assert pool.failures[3]["similarity"] == pytest.approx(11 / 13, abs=1e-4)  # 11 shared 1-2-grams of 13
    assert pool.kept["Trust in others"][0]["text"] == "What does trust mean to you?"  # list marker removed
    row = pool.kept["Money"][0]
    assert (row["source"], row["source_id"], row["kind"], row["options"]) == ("generated", "money/1", "open", [])
    assert pool.counts == {"returned": 8, "rejected": 2, "duplicates_exact": 2, "duplicates_near": 1, "kept": 3}


def test_generate_options_are_checked():
    from pydantic import ValidationError

    from factory.stages.questions import Generate

    with pytest.raises(ValidationError, match="max_calls 1 cannot collect per_topic 20 at per_call 10"):
        Generate(backend="b", topics=["a"], per_topic=20, max_calls=1)
    with pytest.raises(ValidationError, match="are the same topic"):
        Generate(backend="b", topics=["Trust", "trust!"])
    g = Generate(backend="b", topics="personality_200", per_topic=25)
    topics = g.topic_list()
    assert len(topics) == len(set(topics)) == 200 and g.calls_allowed() == 9


class ScriptedClient:
    """A stand-in backend: answers per (topic, call) from a script, records every request."""

    model_id = "scripted"
    cache = None

    def __init__(self, script: dict[str, list[str]]):
        self.script = script
        self.requests: list = []
        self.calls = 0

    def generate(self, requests, follow=None):  # follow-ups (retries) in rounds, as remote backends run them
        from factory.llm.types import in_rounds

        return in_rounds(self._answer, requests, follow)

    def _answer(self, requests):
        from factory.llm.types import GenerationResult

        out = []
        for r in requests:
            self.calls += 1
            self.requests.append(r)
            topic = r.messages[-1][1].split("\n", 1)[0].removeprefix("Topic: ")
            text = self.script[topic].pop(0)
            out.append(GenerationResult(text, "stop", 10, 20))
        return out


SCRIPT = {
    "Trust in others": [
        json.dumps({"questions": ["What does trust mean to you?", "Do you trust your neighbours?"]}),
        json.dumps({"questions": ["How has a betrayal changed the way you trust new people?", "Why?"]}),
        "not json",
    ],
    "Money": [
        json.dumps(
            {"questions": ["How do you decide what to spend money on each month?", "What does trust mean to you now?"]}
        ),
        json.dumps(
            {
                "questions": [
                    "2) What did your parents teach you about saving money?",
                    "How do you decide what to SPEND money on each month?",
                ]
            }
        ),
        json.dumps({"questions": ["When have you regretted a purchase, and what did it teach you about yourself?"]}),
    ],
}


def scripted_build(write_recipe, tmp_path, monkeypatch, seed: int = 0):
    from factory.llm import backend

    client = ScriptedClient({k: list(v) for k, v in SCRIPT.items()})
    monkeypatch.setattr(backend, "load", lambda config, cache=None: client)  # what ctx.llm opens
    body = (
        "    generate:\n      backend: b\n      topics: [Trust in others, Money]\n      per_topic: 3\n"
        "      per_call: 2\n      max_calls: 3\n      max_retries: 0\n      held_out: 0.4\n"
    )
    path = write_recipe(
        f"name: q\nseed: {seed}\nbackends:\n  b: {{type: transformers}}\nstages:\n  q:\n    uses: questions\n{body}"
    )
    runner = Runner(load_recipe(path), runs_dir=tmp_path / "runs", progress=False)
    runner.build()
    store = runner.store("q")
    fails = load_from_disk(str(store.failures_dir)).to_list()
    return load_from_disk(str(store.data_dir)), fails, store.manifest(), client


def test_generation_rounds_with_a_scripted_model(write_recipe, tmp_path, monkeypatch):
    ds, fails, manifest, client = scripted_build(write_recipe, tmp_path, monkeypatch)
    assert ds["question_id"] == [
        "generated/trust-in-others/1",
        "generated/trust-in-others/2",
        "generated/money/1",
        "generated/money/2",
        "generated/money/3",
    ]
    assert ds[3]["text"] == "What did your parents teach you about saving money?"
    assert set(ds["source"]) == {"generated"} and set(ds["kind"]) == {"open"} and ds["options"] == [[]] * 5
    assert ds["split"].count("held_out") == 2 and set(ds["split"]) == {"train", "held_out"}
    reasons = [(json.loads(f["record"])["topic"], f["reason"]) for f in fails]
    assert reasons[:4] == [
        ("Trust in others", "yes/no question"),
        ("Money", "near-duplicate of generated/trust-in-others/1"),
        ("Trust in others", "fewer than 5 words"),
        ("Money", "duplicate of generated/money/1"),
    ]
    assert reasons[4][0] == "Trust in others" and reasons[4][1].startswith("invalid JSON")
    assert reasons[5] == ("Trust in others", "topic short of per_topic after max_calls")
    assert json.loads(fails[5]["record"]) == {"topic": "Trust in others", "kept": 2, "wanted": 3, "calls": 3}
    m = manifest["metrics"]
    assert (m["generate.calls"], m["generate.calls_failed"], m["generate.kept"], m["generate.shortfall"]) == (
        6,
        1,
        5,
        1,
    )
    assert (m["generate.duplicates_exact"], m["generate.duplicates_near"], m["generate.rejected"]) == (1, 1, 2)
    assert m["generate.held_out"] == 2 and manifest["failure_reasons"]["yes/no question"] == 1
    # per call: its own seed, a schema for exactly the count asked, and the topic's kept questions to avoid
    seeds = [r.sampling.seed for r in client.requests]
    assert len(set(seeds)) == len(seeds) == 6
    last = [r for r in client.requests if "Trust in others" in r.messages[-1][1]][-1]
    assert json.loads(last.constraint.json_schema)["properties"]["questions"]["minItems"] == 1
    assert "- How has a betrayal changed the way you trust new people?" in last.messages[-1][1]
    assert {"builtin:questions/system.jinja", "builtin:questions/generate.jinja"} <= set(
        manifest["fingerprint_payload"]["files"]
    )


def test_held_out_split_is_seeded(write_recipe, tmp_path, monkeypatch):
    a, *_ = scripted_build(write_recipe, tmp_path / "a", monkeypatch)
    b, *_ = scripted_build(write_recipe, tmp_path / "b", monkeypatch)
    assert a["split"] == b["split"]
    splits = {
        tuple(scripted_build(write_recipe, tmp_path / f"s{s}", monkeypatch, seed=s)[0]["split"]) for s in range(6)
    }
    assert len(splits) > 1


def test_generation_end_to_end_on_the_tiny_model(tmp_path, tiny_path):
    """The tiny model (conftest's, one per session) writes gibberish: check invariants, not content."""
    from factory.questions.generate import check_question
    from factory.questions.sets import DuplicateIndex

    path = tmp_path / "r.yaml"
    path.write_text(f"""\
name: g
seed: 0
backends:
  tiny: {{type: transformers, model: "{tiny_path}", batch_size: 4}}
stages:
  q:
    uses: questions
    sets: [election]
    generate:
      backend: tiny
      topics: [Trust in others, Reaction to criticism]
      per_topic: 2
      per_call: 2
      max_calls: 2
      max_tokens: 120
      max_retries: 0
""")
    built = []
    for runs in ("a", "b"):
        runner = Runner(load_recipe(path), runs_dir=tmp_path / runs, progress=False)
        runner.build()
        store = runner.store("q")
        ds = load_from_disk(str(store.data_dir))
        fails = load_from_disk(str(store.failures_dir)).to_list() if store.failures_dir.exists() else []
        built.append((ds, fails, store.manifest()))
    (ds, fails, manifest), (again, _, _) = built
    assert ds.to_list() == again.to_list()  # same recipe and seed, same rows
    assert ds.column_names == [*load_seed_set("election")[0], "split"]
    election, made = ds.to_list()[:3], ds.to_list()[3:]
    assert [r["source"] for r in election] == ["election"] * 3 and {r["split"] for r in election} == {"train"}
    m = manifest["metrics"]
    assert m["generate.calls"] >= 2 and m["backend_calls"] >= 2
    assert (
        m["generate.returned"]
        == m["generate.kept"] + m["generate.rejected"] + m["generate.duplicates_exact"] + m["generate.duplicates_near"]
    )
    assert len(made) == m["generate.kept"] and len(made) + m["generate.shortfall"] == 4
    assert len(fails) == manifest["failures"] and all(f["reason"] for f in fails)
    for r in made:
        assert r["source"] == "generated" and r["kind"] == "open" and r["options"] == []
        assert r["topic"] in ("Trust in others", "Reaction to criticism") and r["split"] in ("train", "held_out")
        assert r["question_id"].startswith("generated/") and check_question(r["text"]) is None
    # deduplication comes before the split: no held-out question repeats a training question, even nearly
    index = DuplicateIndex(0.8)
    for r in ds.to_list():
        if r["split"] == "train":
            index.add(r["question_id"], r["text"])
    assert all(index.match(r["text"]) is None for r in made if r["split"] == "held_out")


def test_killed_generation_resumes_from_the_request_cache(tmp_path, tiny_path, monkeypatch):
    """Generation is one batch; a killed build's answers are in the request cache, so none is asked twice."""
    from factory.errors import StageError
    from factory.llm import backend
    from factory.llm.transformers_backend import TransformersBackend

    sent: list[str] = []
    limit = {"n": 1}
    original = TransformersBackend.generate

    def counting(self, requests, follow=None):
        if len(sent) + len(requests) > limit["n"]:
            raise RuntimeError("killed")
        sent.extend(r.key(self.model_id, self.revision) for r in requests)
        return original(self, requests, follow)

    monkeypatch.setattr(TransformersBackend, "generate", counting)
    monkeypatch.setattr(backend, "_LOADED", {})
    path = tmp_path / "r.yaml"
    path.write_text(f"""\
name: g
seed: 0
backends:
  tiny: {{type: transformers, model: "{tiny_path}", batch_size: 4}}
stages:
  q:
    uses: questions
    batch_size: 1   # one topic per request group
    generate: {{backend: tiny, topics: [Trust, Money], per_topic: 2, per_call: 2, max_calls: 1, max_tokens: 80,
                max_retries: 0}}
""")
    with pytest.raises(StageError, match="killed"):
        Runner(load_recipe(path), runs_dir=tmp_path / "runs", progress=False).build()
    assert len(sent) == 1  # the first topic's call was answered, the second killed the build
    limit["n"] = 10**9
    runner = Runner(load_recipe(path), runs_dir=tmp_path / "runs", progress=False)
    runner.build()
    assert len(sent) == len(set(sent)) == 2  # the resumed build asked only the second topic
    assert runner.store("q").manifest()["metrics"]["requests_cached"] == 1


def test_held_out_share_of_selected_questions_is_seeded(tmp_path, write_recipe):
    path = write_recipe("""\
        name: h
        seed: 3
        stages:
          q: {uses: questions, sets: [opinionqa], with_human_distribution: true, sample: 40, held_out: 0.25}
          plain: {uses: questions, sets: [opinionqa], with_human_distribution: true, sample: 40}
    """)
    runner = Runner(load_recipe(path), runs_dir=tmp_path / "runs", progress=False)
    runner.build()
    data = load_from_disk(str(runner.store("q").data_dir)).to_pandas()
    assert (data["split"] == "held_out").sum() == 10 and set(data["split"]) == {"train", "held_out"}
    assert "split" not in load_from_disk(str(runner.store("plain").data_dir)).column_names
    again = Runner(load_recipe(path), runs_dir=tmp_path / "again", progress=False)
    again.build(only=["q"])
    assert load_from_disk(str(again.store("q").data_dir)).to_pandas()["split"].tolist() == data["split"].tolist()
