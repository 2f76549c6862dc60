"""The `dataset` stage's real Hub download path: `factory build` in a subprocess with `HF_ENDPOINT` pointed at a
loopback Hub (tests/hub_server.py) that serves a dataset repo the way the Hub's API does, so `huggingface_hub`
and `datasets` run unpatched: revision info, tree listing, resolve with the Hub's headers, typed errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hub_server import HubServer, Repo, factory, parquet_bytes

TESTS = Path(__file__).resolve().parent
FIXTURE = TESTS.parent / "recipes" / "data" / "nemotron_like" / "personas.parquet"
REPO = "nvidia/Nemotron-Like"
RECIPE = """\
name: from_hub
seed: 1
stages:
  people:
    uses: dataset
    from: {source}
    split: {split}
    role: people
    columns: {{uuid: person_id, sex: sex, age: age, state: geography}}
    sample: {sample}
"""


@pytest.fixture(scope="module")
def hub():
    """v1: train (200 rows) and test (40 rows) splits; v2: train only, the last 100 rows."""
    table = pq.read_table(FIXTURE)
    repo = Repo()
    readme = b"---\nlicense: cc-by-4.0\npretty_name: Nemotron-like personas\n---\n# A test copy\n"
    repo.commit(
        {
            "README.md": readme,
            "data/train-00000-of-00001.parquet": parquet_bytes(table.slice(0, 200)),
            "data/test-00000-of-00001.parquet": parquet_bytes(table.slice(200)),
        },
        "v1",
    )
    repo.commit(
        {"README.md": readme, "data/train-00000-of-00001.parquet": parquet_bytes(table.slice(140))}, "v2", "main"
    )
    with HubServer() as server:
        server.repos[REPO] = repo
        yield server


def write(tmp: Path, source: str, split: str = "[train, test]", sample: int | str = "null") -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(RECIPE.format(source=source, split=split, sample=sample))
    return path


def rows(tmp: Path) -> list[dict]:
    from datasets import load_from_disk

    (data,) = (tmp / "runs" / "from_hub" / "people").glob("*/data")
    return load_from_disk(str(data)).to_list()


def test_people_come_from_the_loopback_hub_through_the_real_clients(hub, tmp_path):
    write(tmp_path, f"hub://{REPO}@v1")
    hub.requests.clear()
    result = factory(hub.url, tmp_path, "build", "recipe.yaml")
    assert result.returncode == 0, result.stderr
    got = rows(tmp_path)
    source = pq.read_table(FIXTURE).to_pylist()
    assert [r["person_id"] for r in got] == [r["uuid"] for r in source]  # train then test, in order
    assert got[5]["age"] == source[5]["age"]
    assert f"GET /api/datasets/{REPO}/tree/" in " ".join(hub.requests)
    assert any(r.startswith("GET /datasets/") and r.endswith("train-00000-of-00001.parquet") for r in hub.requests)

    hub.requests.clear()  # built: the second build asks the Hub nothing
    again = factory(hub.url, tmp_path, "build", "recipe.yaml")
    assert again.returncode == 0 and "cached" in again.stdout and hub.requests == []


def test_the_pinned_revision_is_what_is_read(hub, tmp_path):
    write(tmp_path, f"hub://{REPO}@v2", split="train", sample=30)
    assert factory(hub.url, tmp_path, "build", "recipe.yaml").returncode == 0
    later = {r["uuid"] for r in pq.read_table(FIXTURE).slice(140).to_pylist()}
    got = rows(tmp_path)
    assert len(got) == 30 and {r["person_id"] for r in got} <= later


@pytest.mark.parametrize(
    "source,split,message",
    [
        (f"hub://{REPO}@v9", "train", f"hub://{REPO}@v9: revision 'v9' does not exist"),
        ("hub://nvidia/Nothing-Here@v1", "train", "hub://nvidia/Nothing-Here@v1: no dataset 'nvidia/Nothing-Here'"),
        (f"hub://{REPO}@v2", "validation", f"hub://{REPO}@v2: no split 'validation' (splits: train)"),
    ],
)
def test_hub_mistakes_are_one_line(hub, tmp_path, source, split, message):
    write(tmp_path, source, split=split)
    result = factory(hub.url, tmp_path, "build", "recipe.yaml")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_no_network_is_one_line(tmp_path):
    with HubServer() as gone:
        endpoint = gone.url  # a port nothing listens on once the server is stopped
    write(tmp_path, f"hub://{REPO}@v1")
    result = factory(endpoint, tmp_path, "build", "recipe.yaml")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"cannot reach {endpoint} (no network?)" in result.stderr


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("HF_TOKEN"), reason="live Hub test: needs HF_TOKEN and a network")
def test_live_hub_questions(tmp_path):
    """A small public dataset (MMLU's abstract algebra questions) read as questions from the real Hub."""
    (tmp_path / "recipe.yaml").write_text(
        "name: live\nstages:\n  mmlu:\n    uses: dataset\n    from: hub://cais/mmlu@main\n"
        "    config: abstract_algebra\n"
        "    split: test\n    role: questions\n    columns: {question: text, choices: options}\n    sample: 5\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    cmd = [sys.executable, "-m", "factory", "build", "recipe.yaml"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    from datasets import load_from_disk

    (data,) = (tmp_path / "runs" / "live" / "mmlu").glob("*/data")
    got = load_from_disk(str(data))
    assert len(got) == 5 and all(len(o) == 4 for o in got["options"]) and set(got["kind"]) == {"choice"}


def test_hub_personas_are_audited_answer_the_election_and_are_evaluated(hub, tmp_path, tiny_path):
    """Done-when: the shipped recipe with its people and persona texts served by the loopback Hub in a foreign
    (Nemotron-Personas) schema: audited against the census, answering the election questions on the tiny model
    in their own style beside their census facts, and evaluated like the factory's own styles."""
    recipe = tmp_path / "audit_personas.yaml"
    recipe.write_text((TESTS.parent / "recipes" / "audit_personas.yaml").read_text())
    source = f"hub://{REPO}@v1"
    args = [f"stages.people.from={source}", f"stages.nemotron.from={source}", "stages.people.sample=60"]
    args += [f"backends.small.model={tiny_path}", "vars.n_voters=6"]
    result = factory(hub.url, tmp_path, "build", recipe.name, *args)
    assert result.returncode == 0, result.stderr

    from datasets import load_from_disk

    def stage(name: str, extra: str = "data"):
        (path,) = (tmp_path / "runs" / "audit_personas" / name).glob(f"*/{extra}")
        return load_from_disk(str(path)).to_pandas()

    people = stage("people")
    assert len(people) == 60 and set(people["person_id"]) <= {r["uuid"] for r in pq.read_table(FIXTURE).to_pylist()}
    audit = stage("audit")
    assert set(audit["margin"]) >= {"S0101 age x sex", "S1201 marital status x age x sex"}
    assert (audit.groupby("geography")["persons"].max().sum()) == len(people)
    assert "S2301 employment x age" in set(stage("audit", "not_compared")["what"])

    votes = stage("votes")
    assert set(votes["style"]) == {"meta", "nemotron"} and votes["valid"].all()
    assert set(votes["person_id"]) <= set(people["person_id"]) and votes["person_id"].nunique() == 6
    styles = stage("evaluate", "styles")
    nemotron = styles[(styles["style"] == "nemotron") & (styles["metric"] == "election_mae_2020")]
    assert len(nemotron) == 1 and 0 <= nemotron["value"].iloc[0] <= 1
    elections = stage("evaluate", "elections")
    assert set(elections[elections["style"] == "nemotron"]["state"]) <= {"NY", "WY", "DC"}
