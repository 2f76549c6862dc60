"""Argilla review loop: the real `argilla` client against an in-memory server at the HTTP layer (`argilla_stub`):
export creates the dataset (fields, questions, metadata, the judge's suggestion) and upserts records by pair id;
import writes the decisions file and builds the `review` stage (majority, swaps, ties dropped and counted,
who-reviewed-how-many), deterministically; errors are one line; the API key reaches no file and no output.
A live test runs against a real server when ARGILLA_API_URL and ARGILLA_API_KEY are set."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from argilla_stub import ArgillaStub
from datasets import load_from_disk

from factory.recipe import load_recipe
from factory.review.records import a_is_chosen, pair_id
from factory.runner import Runner
from factory.store import content_hash

RECIPE = """\
name: rv
seed: 1  # seed 0 happens to show the judge's pick as A in all six pairs
stages:
  pairs: {uses: "fake_pairs:judged", n: 6}
  reviewed: {uses: review, inputs: [pairs], retries: 0, timeout: 10}
"""
KEY = "argilla.apikey-SENTINEL-never-written-0123456789"


@pytest.fixture
def recipe(tmp_path):
    """The recipe written, its pairs built; returns (recipe path, runs folder)."""
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    runs = tmp_path / "runs"
    Runner(load_recipe(path), runs_dir=runs, progress=False).build(only=["pairs"])
    return path, runs


@pytest.fixture
def stub(monkeypatch):
    server = ArgillaStub(api_key=KEY)
    monkeypatch.setenv("ARGILLA_API_URL", server.url)
    monkeypatch.setenv("ARGILLA_API_KEY", KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield server
    server.close()


def pairs_of(path: Path, runs: Path) -> list[dict]:
    runner = Runner(load_recipe(path), runs_dir=runs, progress=False)
    return load_from_disk(str(runner.store("pairs").data_dir)).to_list()


def reviewed_store(path: Path, runs: Path, *overrides: str):
    return Runner(load_recipe(path, list(overrides)), runs_dir=runs, progress=False).store("reviewed")


def one_line_error(result) -> str:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --- the stage alone ------------------------------------------------------------------------------------------
def test_without_decisions_every_pair_passes_through_unreviewed(recipe, cli):
    path, runs = recipe
    result = cli("build", path, "--runs-dir", runs, "--no-progress")
    assert result.exit_code == 0, result.output
    store = reviewed_store(path, runs)
    manifest = store.manifest()
    assert manifest["fingerprint_payload"]["files"] == {"reviews/rv-reviewed.jsonl": None}
    assert (
        manifest["config"]["dataset"] == "rv-reviewed"
        and manifest["config"]["responses"] == "reviews/rv-reviewed.jsonl"
    )
    s = manifest["summary"]
    assert (s["pairs"], s["kept"], s["reviewed"], s["unreviewed"], s["reviewers"]) == (6, 6, 0, 6, {})
    pairs = pairs_of(path, runs)
    out = load_from_disk(str(store.data_dir))
    assert out.column_names == [*pairs[0], "pair_id", "review_status", "votes_chosen", "votes_rejected",
                                "reviewers", "rating", "comments"]  # fmt: skip
    for before, after in zip(pairs, out.to_list()):
        assert {k: after[k] for k in before} == before
        assert after["pair_id"] == pair_id(before) and after["review_status"] == "unreviewed"
        assert (after["votes_chosen"], after["reviewers"], after["rating"]) == (0, [], None)

    required = cli("build", path, "--runs-dir", runs, "stages.reviewed.require_reviews=true")
    line = one_line_error(required)
    assert "no review decisions yet (reviews/rv-reviewed.jsonl)" in line
    assert "`factory review export`" in line and "`factory review import`" in line


def test_a_malformed_decisions_file_names_its_line(recipe, cli):
    path, runs = recipe
    (path.parent / "reviews").mkdir()
    good = {"pair_id": "x", "user": "alice", "user_id": "1", "better": "a", "prefers": "chosen", "rating": None,
            "comment": None}  # fmt: skip
    (path.parent / "reviews" / "rv-reviewed.jsonl").write_text(
        json.dumps(good) + "\n" + json.dumps({**good, "user": "bob", "rating": 9}) + "\n"
    )
    line = one_line_error(cli("build", path, "--runs-dir", runs))
    assert line.endswith("rv-reviewed.jsonl:2: 'rating' must be 1-5 or null, got 9")


# --- export ---------------------------------------------------------------------------------------------------
def test_export_creates_the_dataset_and_upserts_records_with_the_judges_suggestion(recipe, stub, cli):
    path, runs = recipe
    result = cli("review", "export", path, "--runs-dir", runs, "stages.reviewed.min_submitted=3")
    assert result.exit_code == 0, result.output
    assert "6 pair(s) logged to Argilla dataset 'rv-reviewed' in workspace 'argilla' (created)" in result.stdout
    ds = stub.dataset("rv-reviewed")
    assert f"{stub.url}/dataset/{ds['id']}/annotation-mode" in result.stdout
    assert stub.unknown == [] and {r["api_key"] for r in stub.requests} == {KEY}

    def sent(method: str, suffix: str) -> list:
        return [r["json"] for r in stub.requests if r["method"] == method and r["path"].endswith(suffix)]

    (created,) = sent("POST", "/api/v1/datasets")
    assert created["name"] == "rv-reviewed" and created["workspace_id"] == stub.workspace["id"]
    assert any(
        (p or {}).get("distribution") == {"strategy": "overlap", "min_submitted": 3} for p in sent("PATCH", ds["id"])
    )
    assert ds["status"] == "ready" and ds["distribution"]["min_submitted"] == 3
    assert "A is not always the judge's pick" in ds["guidelines"] and "3 submitted" in ds["guidelines"]
    fields = {f["name"]: f for f in sent("POST", "/fields")}
    assert list(fields) == ["prompt", "target_profile", "response_a", "response_b"]
    assert all(f["settings"] == {"type": "text", "use_markdown": True} and f["required"] for f in fields.values())
    questions = {q["name"]: q for q in sent("POST", "/questions")}
    assert questions["better"]["required"] and questions["better"]["settings"]["type"] == "label_selection"
    assert [o["value"] for o in questions["better"]["settings"]["options"]] == ["a", "b"]
    assert questions["rating"]["settings"]["type"] == "rating" and not questions["rating"]["required"]
    assert [o["value"] for o in questions["rating"]["settings"]["options"]] == [1, 2, 3, 4, 5]
    assert questions["comment"]["settings"]["type"] == "text" and not questions["comment"]["required"]
    metadata = {m["name"]: m["settings"] for m in sent("POST", "/metadata-properties")}
    assert {n for n, s in metadata.items() if s["type"] == "terms"} == {
        "state", "age_band", "target", "rejected_style", "rule", "split", "a_is"}  # fmt: skip
    assert {n for n, s in metadata.items() if s["type"] == "float"} == {
        "openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism", "margin"}  # fmt: skip
    assert metadata["openness"]["min"] == 0 and metadata["openness"]["max"] == 1
    visible = {m["name"]: m["visible_for_annotators"] for m in sent("POST", "/metadata-properties")}
    assert visible.pop("a_is") is False and all(visible.values())  # the A/B order is hidden from reviewers

    (upsert,) = sent("PUT", "/records/bulk")
    items = {i["external_id"]: i for i in upsert["items"]}
    pairs = {pair_id(p): p for p in pairs_of(path, runs)}
    assert set(items) == set(pairs)
    seed = load_recipe(path).stage_seed("reviewed")
    orders = set()
    better_id = stub.questions[ds["id"]][0]["id"]
    for pid, item in items.items():
        p, meta = pairs[pid], item["metadata"]
        chosen_first = a_is_chosen(seed, pid)
        orders.add(chosen_first)
        assert meta["a_is"] == ("chosen" if chosen_first else "rejected")
        a, b = (p["chosen"], p["rejected"]) if chosen_first else (p["rejected"], p["chosen"])
        assert (item["fields"]["response_a"], item["fields"]["response_b"]) == (a[0]["content"], b[0]["content"])
        assert p["prompt"][1]["content"] in item["fields"]["prompt"] and "**User**" in item["fields"]["prompt"]
        assert f"**{p['target']}**" in item["fields"]["target_profile"]
        assert (meta["state"], meta["age_band"], meta["target"], meta["split"]) == (
            p["state"], p["age_band"], p["target"], p["split"])  # fmt: skip
        assert meta["openness"] == pytest.approx(p["target_vector"][0], abs=1e-4)
        (suggestion,) = item["suggestions"]
        assert suggestion["question_id"] == better_id and suggestion["value"] == ("a" if chosen_first else "b")
        assert suggestion["agent"] == "fake-org/fake-judge" and suggestion["type"] == "model"
        assert suggestion["score"] == pytest.approx(p["margin"], abs=1e-4)
    assert orders == {True, False}  # A is the judge's pick for some pairs, B for others

    pid = next(iter(items))
    stub.vote("rv-reviewed", pid, "alice", "chosen")
    again = cli("review", "export", path, "--runs-dir", runs, "stages.reviewed.min_submitted=3")
    assert again.exit_code == 0 and "(updated)" in again.stdout
    assert len(sent("POST", "/api/v1/datasets")) == 1 and len(stub.records[ds["id"]]) == 6  # upserted, not added
    assert len(stub.record("rv-reviewed", pid)["responses"]) == 1  # a re-export keeps what reviewers submitted


# --- import ---------------------------------------------------------------------------------------------------
def vote_scenario(stub, ids: list[str]) -> None:
    """Pair 0: 2 agree, 1 disagrees; pair 1: a 1-1 tie; pair 2: the majority prefers the judge's rejected;
    pair 3: only a draft; pairs 4, 5: no response."""
    stub.vote("rv-reviewed", ids[0], "alice", "chosen", rating=4, comment="fits the target")
    stub.vote("rv-reviewed", ids[0], "bob", "chosen", rating=5)
    stub.vote("rv-reviewed", ids[0], "carol", "rejected", rating=2, comment="too calm")
    stub.vote("rv-reviewed", ids[1], "alice", "chosen")
    stub.vote("rv-reviewed", ids[1], "bob", "rejected")
    stub.vote("rv-reviewed", ids[2], "alice", "rejected", rating=3)
    stub.vote("rv-reviewed", ids[2], "carol", "rejected")
    stub.vote("rv-reviewed", ids[2], "bob", "chosen")
    stub.respond("rv-reviewed", ids[3], "carol", {"better": "a"}, status="draft")


def test_import_resolves_majorities_swaps_and_ties(recipe, stub, cli):
    path, runs = recipe
    assert cli("review", "export", path, "--runs-dir", runs).exit_code == 0
    pairs = pairs_of(path, runs)
    ids = [pair_id(p) for p in pairs]
    vote_scenario(stub, ids)
    result = cli("review", "import", path, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    assert "8 submitted response(s)" in result.stdout
    assert (
        "3 of 6 pair(s) reviewed: 1 agreed with the judge, 1 swapped, 1 tie(s) dropped; 3 unreviewed" in result.stdout
    )
    assert "responses per reviewer: alice 3, bob 3, carol 2" in result.stdout

    decisions = [json.loads(line) for line in (path.parent / "reviews" / "rv-reviewed.jsonl").read_text().splitlines()]
    assert [(d["pair_id"], d["user"]) for d in decisions] == sorted((d["pair_id"], d["user"]) for d in decisions)
    assert len(decisions) == 8 and "draft" not in json.dumps(decisions)
    assert set(decisions[0]) == {"pair_id", "user", "user_id", "better", "prefers", "rating", "comment"}

    store = reviewed_store(path, runs)
    out = {r["pair_id"]: r for r in load_from_disk(str(store.data_dir)).to_list()}
    assert set(out) == set(ids) - {ids[1]}  # the tie is dropped
    agreed, swapped = out[ids[0]], out[ids[2]]
    assert (agreed["review_status"], agreed["votes_chosen"], agreed["votes_rejected"]) == ("agreed", 2, 1)
    assert agreed["chosen"] == pairs[0]["chosen"] and agreed["reviewers"] == ["alice", "bob", "carol"]
    assert agreed["rating"] == 4.5 and agreed["comments"] == ["fits the target", "too calm"]
    assert (swapped["review_status"], swapped["votes_chosen"], swapped["votes_rejected"]) == ("swapped", 2, 1)
    p = pairs[2]
    assert (swapped["chosen"], swapped["rejected"]) == (p["rejected"], p["chosen"])
    assert (swapped["chosen_score"], swapped["rejected_score"]) == (p["rejected_score"], p["chosen_score"])
    assert (swapped["chosen_vector"], swapped["rejected_vector"]) == (p["rejected_vector"], p["chosen_vector"])
    assert (swapped["chosen_person_id"], swapped["rejected_person_id"]) == ("b002", "p002")
    assert swapped["margin"] == -p["margin"] and swapped["rating"] == 3.0
    assert swapped["target"] == p["target"] and swapped["split"] == p["split"]
    for i in (3, 4, 5):
        assert out[ids[i]]["review_status"] == "unreviewed" and out[ids[i]]["reviewers"] == []

    (dropped,) = load_from_disk(str(store.dir / "dropped")).to_list()
    assert dropped == {"pair_id": ids[1], "question_id": "q001", "target": "analyst", "reason": "tie",
                       "votes_chosen": 1, "votes_rejected": 1, "reviewers": ["alice", "bob"]}  # fmt: skip
    reviewers = {r["reviewer"]: r for r in load_from_disk(str(store.dir / "reviewers")).to_list()}
    assert reviewers["alice"] == {"reviewer": "alice", "responses": 3, "agreed_with_judge": 2, "with_majority": 2,
                                  "in_ties": 1, "mean_rating": 3.5}  # fmt: skip
    assert (reviewers["carol"]["responses"], reviewers["carol"]["with_majority"]) == (2, 1)
    s = store.manifest()["summary"]
    assert (s["reviewed"], s["agreed"], s["swapped"], s["ties_dropped"], s["unreviewed"]) == (3, 1, 1, 1, 3)
    assert s["judge_agreement"] == 0.5 and s["responses"] == 8 and s["stale_responses"] == 0
    assert s["reviewers"]["bob"] == {"responses": 3, "agreed_with_judge": 2, "with_majority": 1, "in_ties": 1}

    # still a TRL preference dataset: what train_dpo reads, conversational as TRL sees it
    from trl.data_utils import is_conversational

    from factory.training.dpo import pair_splits

    train, test = pair_splits(load_from_disk(str(store.data_dir)), "test", "stages.dpo")
    assert len(train) + len(test) == 5 and train.column_names == ["prompt", "chosen", "rejected"]
    assert all(is_conversational(row) for row in train)


def test_pseudonymous_reviewers_keep_their_counts_but_not_their_names(recipe, stub, cli):
    path, runs = recipe
    assert cli("review", "export", path, "--runs-dir", runs).exit_code == 0
    vote_scenario(stub, [pair_id(p) for p in pairs_of(path, runs)])
    assert cli("review", "import", path, "--runs-dir", runs).exit_code == 0
    named = reviewed_store(path, runs)
    Runner(load_recipe(path, ["stages.reviewed.pseudonymous=true"]), runs_dir=runs, progress=False).build()
    anonymous = reviewed_store(path, runs, "stages.reviewed.pseudonymous=true")
    assert anonymous.fingerprint != named.fingerprint
    reviewers = load_from_disk(str(anonymous.dir / "reviewers")).to_list()
    rows = load_from_disk(str(anonymous.data_dir)).to_list() + reviewers
    text = json.dumps(rows) + json.dumps(anonymous.manifest())
    assert not any(name in text for name in ("alice", "bob", "carol"))
    counts = sorted(r["responses"] for r in reviewers)
    assert counts == [2, 3, 3] and all(r.startswith("reviewer-") for r in anonymous.manifest()["summary"]["reviewers"])


def test_import_is_deterministic_and_new_responses_are_a_new_version(recipe, stub, cli):
    path, runs = recipe
    two = "stages.reviewed.min_submitted=2"
    cli("review", "export", path, "--runs-dir", runs, two)
    ids = [pair_id(p) for p in pairs_of(path, runs)]
    vote_scenario(stub, ids)
    first = cli("review", "import", path, "--runs-dir", runs, two)
    assert first.exit_code == 0, first.output
    store = reviewed_store(path, runs, two)
    decisions = (path.parent / "reviews" / "rv-reviewed.jsonl").read_bytes()
    data_hash = content_hash(store.data_dir)
    assert store.manifest()["summary"]["pending"] == 0

    again = cli("review", "import", path, "--runs-dir", runs, two)
    assert again.exit_code == 0 and f"cached {store.fingerprint}" in again.stdout
    assert (path.parent / "reviews" / "rv-reviewed.jsonl").read_bytes() == decisions
    assert (
        reviewed_store(path, runs, two).fingerprint == store.fingerprint and content_hash(store.data_dir) == data_hash
    )
    shutil.rmtree(store.dir)  # a rebuild from the same decisions writes the same bytes
    cli("build", path, "--runs-dir", runs, two, "--no-progress")
    assert content_hash(store.data_dir) == data_hash

    stub.vote("rv-reviewed", ids[4], "dave", "rejected")  # one vote: fewer than min_submitted
    stub.vote("rv-reviewed", ids[1], "carol", "rejected")  # breaks the tie
    newer = cli("review", "import", path, "--runs-dir", runs, two)
    assert newer.exit_code == 0, newer.output
    new_store = reviewed_store(path, runs, two)
    assert new_store.fingerprint != store.fingerprint and store.is_complete()  # the old version stays
    assert "built" in newer.stdout and "1 of them with fewer than 2 votes so far" in newer.stdout
    s = new_store.manifest()["summary"]
    assert (s["swapped"], s["ties_dropped"], s["pending"]) == (2, 0, 1)
    out = {r["pair_id"]: r for r in load_from_disk(str(new_store.data_dir)).to_list()}
    assert out[ids[4]]["review_status"] == "unreviewed" and out[ids[4]]["votes_rejected"] == 1

    dropped = cli("build", path, "--runs-dir", runs, two,
                  "stages.reviewed.keep_unreviewed=false", "--no-progress")  # fmt: skip
    assert dropped.exit_code == 0
    kept = reviewed_store(path, runs, two, "stages.reviewed.keep_unreviewed=false")
    statuses = load_from_disk(str(kept.data_dir))["review_status"]
    assert sorted(statuses) == ["agreed", "swapped", "swapped"]
    assert kept.manifest()["summary"]["unreviewed_dropped"] == 3


def test_reviewed_pairs_publish_with_a_card(recipe, stub, cli, tmp_path):
    from datasets import load_dataset

    path, runs = recipe
    cli("review", "export", path, "--runs-dir", runs)
    ids = [pair_id(p) for p in pairs_of(path, runs)]
    vote_scenario(stub, ids)
    assert cli("review", "import", path, "--runs-dir", runs).exit_code == 0
    prof = tmp_path / "profile.yaml"
    prof.write_text(f"target: folder\npath: {tmp_path / 'hub'}\nlicense: cc-by-4.0\n")
    result = cli("push", path, "--profile", prof, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    repo = tmp_path / "hub" / "datasets" / "rv"
    loaded = load_dataset(str(repo), "reviewed", split="train", cache_dir=str(tmp_path / "hf"))
    assert len(loaded) == 5 and "review_status" in loaded.column_names
    card = (repo / "README.md").read_text()
    assert "Responses per reviewer" in card and "human-feedback" in card
    assert "reviews/rv-reviewed.jsonl" in card and str(tmp_path) not in card


# --- errors and the key ---------------------------------------------------------------------------------------
def test_errors_are_one_clear_line(recipe, stub, cli, tmp_path, monkeypatch):
    path, runs = recipe
    fresh = tmp_path / "fresh-runs"
    line = one_line_error(cli("review", "export", path, "--runs-dir", fresh))
    assert "the pairs stage 'pairs' is not built; run `factory build" in line and "--only pairs` first" in line
    assert line == one_line_error(cli("review", "import", path, "--runs-dir", fresh))
    assert stub.requests == []  # nothing was sent before the inputs were checked

    line = one_line_error(cli("review", "import", path, "--runs-dir", runs))
    assert line == (f"error: Argilla at {stub.url}: no dataset 'rv-reviewed' in workspace 'argilla'; "
                    "run `factory review export` first")  # fmt: skip
    line = one_line_error(cli("review", "export", path, "--runs-dir", runs, "stages.reviewed.workspace=team"))
    assert line == f"error: Argilla at {stub.url}: no workspace 'team' for your user (yours: argilla)"
    assert "did you mean 'reviewed'" in one_line_error(cli("review", "export", path, "--stage", "reviewd"))
    assert "uses 'fake_pairs:judged', not 'review'" in one_line_error(cli("review", "export", path, "--stage", "pairs"))

    monkeypatch.setenv("ARGILLA_API_KEY", "argilla.wrong-key")
    line = one_line_error(cli("review", "export", path, "--runs-dir", runs))
    assert line == f"error: Argilla at {stub.url}: the API key in ARGILLA_API_KEY was rejected (401 unauthorized)"

    stub.close()
    monkeypatch.setenv("ARGILLA_API_KEY", KEY)
    line = one_line_error(cli("review", "import", path, "--runs-dir", runs))
    assert line.startswith(f"error: Argilla at {stub.url}: cannot connect (")
    assert line.endswith("check ARGILLA_API_URL and that the server is running")

    monkeypatch.delenv("ARGILLA_API_KEY")
    line = one_line_error(cli("review", "export", path, "--runs-dir", runs))
    assert line.startswith("error: set ARGILLA_API_KEY (") and "never written" in line


def test_key_is_never_written_or_printed(recipe, stub, cli, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    path, runs = recipe
    outputs = [cli("review", "export", path, "--runs-dir", runs)]
    vote_scenario(stub, [pair_id(p) for p in pairs_of(path, runs)])
    outputs.append(cli("review", "import", path, "--runs-dir", runs))
    outputs.append(cli("-vv", "review", "import", path, "--runs-dir", runs))
    stub.close()
    outputs.append(cli("review", "export", path, "--runs-dir", runs))  # a failure message too
    assert [o.exit_code for o in outputs] == [0, 0, 0, 1]
    assert {r["api_key"] for r in stub.requests} == {KEY}  # it was used, in the header
    seen = [o.stdout + o.stderr for o in outputs] + [caplog.text, *capsys.readouterr()]
    files = [p for p in path.parent.rglob("*") if p.is_file()]
    assert any(p.name == "rv-reviewed.jsonl" for p in files) and any(p.name == "manifest.json" for p in files)
    seen += [p.read_bytes().decode("latin-1") for p in files]
    assert all(KEY not in s for s in seen)


# --- registry and validate ------------------------------------------------------------------------------------
def test_validate_and_ls_stay_light(tmp_path, cli):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    code = textwrap.dedent(
        f"""
        import sys
        from click.testing import CliRunner
        from factory.cli import main
        r = CliRunner().invoke(main, ['validate', {str(path)!r}])
        assert r.exit_code == 0, r.output
        print([m for m in ('argilla', 'datasets', 'httpx', 'torch') if m in sys.modules])
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1])])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"
    listed = cli("ls").stdout
    assert "review" in listed and "majority vote" in listed
    path.write_text(RECIPE.replace("retries: 0", "min_submited: 2"))
    line = one_line_error(cli("validate", path))
    assert "stages.reviewed.min_submited: unknown key (did you mean 'min_submitted'?)" in line


# --- live -----------------------------------------------------------------------------------------------------
@pytest.mark.live
@pytest.mark.skipif(
    not (os.environ.get("ARGILLA_API_URL") and os.environ.get("ARGILLA_API_KEY")),
    reason="needs a real Argilla server: set ARGILLA_API_URL and ARGILLA_API_KEY",
)
def test_live_export_read_back_and_delete(tmp_path, cli):
    from factory.review import client

    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.replace("n: 6", "n: 2").replace("timeout: 10", "timeout: 60"))
    runs = tmp_path / "runs"
    Runner(load_recipe(path), runs_dir=runs, progress=False).build(only=["pairs"])
    name = f"factory-test-{uuid.uuid4().hex[:12]}"
    conn = client.connect()
    try:
        result = cli("review", "export", path, "--runs-dir", runs, f"stages.reviewed.dataset={name}")
        assert result.exit_code == 0, result.output
        assert "2 pair(s) logged" in result.stdout
        _, dataset = client.find(conn, name, None)
        assert dataset is not None and {f.name for f in dataset.settings.fields} >= {"prompt", "response_a"}
        records = list(dataset.records(with_suggestions=True))
        ids = {pair_id(p) for p in pairs_of(path, runs)}
        assert {str(r.id) for r in records} == ids
        assert all(r.suggestions["better"].value in ("a", "b") for r in records)
        again = cli("review", "export", path, "--runs-dir", runs, f"stages.reviewed.dataset={name}")
        assert again.exit_code == 0 and len(list(dataset.records())) == 2
        imported = cli("review", "import", path, "--runs-dir", runs, f"stages.reviewed.dataset={name}")
        assert imported.exit_code == 0 and "0 submitted response(s)" in imported.stdout
    finally:
        client.delete(conn, name, None)
