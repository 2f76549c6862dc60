"""hub:// inputs: validated offline by syntax alone, fingerprinted by repo and pinned revision, read back from a
published folder repo at exactly the tagged version, recorded in the manifest and the card's lineage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

from factory import hub_inputs
from factory.errors import DataError, RecipeError
from factory.publish.push import publish_recipe
from factory.recipe import load_recipe
from factory.runner import Runner

SOURCE = "name: src\nstages:\n  election: {uses: questions, sets: [election]}\n"
READER = """\
name: reader
stages:
  copy: {{uses: "publish_stages:echo", inputs: ["{url}"]}}
"""


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A folder repo with two versions of one config: v1 the election questions, v2 with the climate ones too."""
    root = tmp_path_factory.mktemp("hubin")
    (root / "src.yaml").write_text(SOURCE)
    (root / "profile.yaml").write_text(f"target: folder\npath: {root / 'hub'}\n")
    rows = {}
    for version, overrides in (("v1", []), ("v2", ["stages.election.sets=[election, climate]"])):
        recipe = load_recipe(root / "src.yaml", overrides)
        runner = Runner(recipe, runs_dir=root / "runs", progress=False)
        runner.build()
        (result,) = publish_recipe(recipe, root / "runs", profile=str(root / "profile.yaml"))
        assert result.version == version
        rows[version] = load_from_disk(str(runner.store("election").data_dir)).to_list()
    return root, root / "hub" / "datasets" / "src", rows


def build_reader(root: Path, url: str, name: str = "reader.yaml"):
    path = root / name
    path.write_text(READER.format(url=url))
    runner = Runner(load_recipe(path), runs_dir=root / "runs", progress=False)
    runner.build()
    return runner


def test_reads_the_pinned_version_and_records_it(published, cli):
    root, repo, rows = published
    v1 = build_reader(root, f"hub+file://{repo}@v1:election")
    assert load_from_disk(str(v1.store("copy").data_dir)).to_list() == rows["v1"]
    (record,) = v1.store("copy").manifest()["inputs"].values()
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "v1^{commit}"], capture_output=True, text=True)
    assert record["repo"] == str(repo) and record["revision"] == "v1" and record["config"] == "election"
    assert (
        record["commit"] == commit.stdout.strip()
        and record["fingerprint"]
        == v1.store("copy").manifest()["fingerprint_payload"]["inputs"][f"hub+file://{repo}@v1:election"]
    )

    v2 = build_reader(root, f"hub+file://{repo}@v2:election", "reader2.yaml")
    assert load_from_disk(str(v2.store("copy").data_dir)).to_list() == rows["v2"] != rows["v1"]
    assert v2.fingerprints["copy"] != v1.fingerprints["copy"]
    again = Runner(load_recipe(root / "reader.yaml"), runs_dir=root / "runs", progress=False)
    assert again.fingerprints == v1.fingerprints and again.status("copy").state == "cached"  # v1 never moved

    plan = cli("plan", root / "reader.yaml", "--runs-dir", root / "runs")
    assert plan.exit_code == 0 and "hub input" in plan.stdout and "pinned" in plan.stdout and "cached" in plan.stdout

    # the reader's own card names the version it read
    (ds,) = publish_recipe(load_recipe(root / "reader.yaml"), root / "runs", profile=str(root / "profile.yaml"))
    card = (root / "hub" / "datasets" / "reader" / "README.md").read_text()
    assert "input: a published folder repo at revision `v1`, config `election`" in card
    assert str(root) not in card


def test_relative_folder_urls_and_missing_versions(published, cli):
    root, repo, _ = published
    rel = hub_inputs.parse("hub+file://hub/datasets/src@v1:election", root)
    absolute = hub_inputs.parse(f"hub+file://{repo}@v1:election", "/elsewhere")
    assert rel.repo == absolute.repo == str(repo)
    assert hub_inputs.fingerprint(rel) == hub_inputs.fingerprint(absolute)

    (root / "bad.yaml").write_text(READER.format(url=f"hub+file://{repo}@v9:election"))
    result = cli("plan", root / "bad.yaml", "--runs-dir", root / "runs")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "no revision 'v9'" in result.stderr
    with pytest.raises(DataError, match="not a published folder repo"):
        hub_inputs.fingerprint(hub_inputs.parse(f"hub+file://{root}@v1", "."))


def test_hub_urls_fingerprint_by_repo_revision_and_config_offline(write_recipe, tmp_path):
    fp = hub_inputs.fingerprint
    base = fp(hub_inputs.parse("hub://org/data@v1:people"))
    assert base == fp(hub_inputs.parse("hub://org/data@v1:people"))
    assert (
        len({base, fp(hub_inputs.parse("hub://org/data@v2:people")), fp(hub_inputs.parse("hub://org/data@v1:x"))}) == 3
    )
    path = write_recipe(READER.format(url="hub://org/data@v1:people"))
    runner = Runner(load_recipe(path), runs_dir=tmp_path / "runs", progress=False)
    assert runner.status("copy").state == "missing"  # planning needs no network
    assert load_recipe(path).stages["copy"].hub["hub://org/data@v1:people"].revision == "v1"


@pytest.mark.parametrize(
    "url,fragment",
    [
        ("hub://org/data", "pin a revision, e.g. hub://org/name@v1:config"),
        ("hub://data@v1", "'data' is not a Hub dataset id (org/name)"),
        ("hub://org/data@v1:", "'' is not a config name"),
        ("hub://org/data@:people", "'' is not a revision"),
        ("hub+file://some/folder", "pin a revision, e.g. hub+file:///path/to/repo@v1:config"),
    ],
)
def test_malformed_hub_inputs_are_one_line_recipe_errors(url, fragment, write_recipe, cli):
    path = write_recipe(READER.format(url=url))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.path == "stages.copy.inputs[0]" and fragment in str(info.value)
    result = cli("validate", path)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and fragment in result.stderr


def test_validate_with_hub_inputs_touches_no_network_and_imports_nothing_heavy(write_recipe):
    path = write_recipe(READER.format(url="hub://org/data@v1:people") + "publish: {profile: hub}\n")
    code = (
        "import sys, socket;"
        "socket.socket.connect = lambda *a, **k: (_ for _ in ()).throw(RuntimeError('network'));"
        "from click.testing import CliRunner; from factory.cli import main;"
        f"r = CliRunner().invoke(main, ['validate', {str(path)!r}]);"
        "assert r.exit_code == 0, r.output;"
        "print(json.dumps([m for m in ('datasets', 'huggingface_hub', 'torch', 'pyarrow') if m in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    out = subprocess.run([sys.executable, "-c", "import json;" + code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_hub_input_lineage_reaches_the_card(write_recipe, tmp_path):
    """A hub:// input, fetched by `factory build` through the real clients from a loopback Hub (tests/hub_server.py),
    is fetched once, recorded in the manifest, and the reader's card lists it in `source_datasets` and its
    lineage."""
    from datasets import Dataset
    from hub_server import HubServer, Repo, factory, parquet_bytes
    from huggingface_hub import DatasetCard

    readme = (
        "---\nconfigs:\n- config_name: people\n  data_files:\n  - split: train\n"
        "    path: data/people/train-*.parquet\n---\n"
    )
    people = Dataset.from_list([{"person_id": "p1"}, {"person_id": "p2"}]).data.table
    repo = Repo()
    repo.commit({"README.md": readme.encode(), "data/people/train-00000-of-00001.parquet": parquet_bytes(people)}, "v3")
    path = write_recipe(READER.format(url="hub://org/people-data@v3:people"))
    with HubServer() as hub:
        hub.repos["org/people-data"] = repo
        first = factory(hub.url, tmp_path, "build", path.name)
        assert first.returncode == 0, first.stderr
        assert any(r.endswith("/people/train-00000-of-00001.parquet") for r in hub.requests)
        hub.requests.clear()
        again = factory(hub.url, tmp_path, "build", path.name)  # cached: fetched once
        assert again.returncode == 0 and hub.requests == []
    runner = Runner(load_recipe(path), runs_dir=tmp_path / "runs", progress=False)
    assert load_from_disk(str(runner.store("copy").data_dir))["person_id"] == ["p1", "p2"]
    (record,) = runner.store("copy").manifest()["inputs"].values()
    assert (record["repo"], record["revision"], record["config"]) == ("org/people-data", "v3", "people")
    (tmp_path / "p.yaml").write_text(f"target: folder\npath: {tmp_path / 'hub'}\n")
    publish_recipe(load_recipe(path), tmp_path / "runs", profile=str(tmp_path / "p.yaml"))
    card = DatasetCard.load(tmp_path / "hub" / "datasets" / "reader" / "README.md")
    assert card.data.source_datasets == ["org/people-data"]
    assert "input: `org/people-data` at revision `v3`, config `people`" in card.text
    assert "- hub://org/people-data@v3:people" in card.text  # the recipe as it ran
