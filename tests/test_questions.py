"""The questions stage: shipped sets load with the right counts and data; user files; selection; errors."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from factory.errors import DataError
from factory.questionsets import load_opinionqa, load_personality, load_seed_set, normalize
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
    from factory.questionsets import read_csv

    (tmp_path / "a.csv").write_text("topic,question,id\nx,One?,1\nx,Two?,1\n")
    from factory.options import DataFile
    from factory.stage import StageContext
    from factory.stages import questions

    opts = questions.Options(files=[DataFile("a.csv", tmp_path / "a.csv")])
    with pytest.raises(DataError, match="question id 'a/1' appears twice"):
        questions.run(opts, {}, StageContext("r", "q", 0))
    assert len(read_csv(tmp_path / "a.csv", "a")) == 2
