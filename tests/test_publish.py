"""Publishing: folder repos load with `datasets` / `DatasetCard` / PEFT; one commit and one never-moved tag per
publish; an unchanged republish is a no-op; a failed publish leaves no half version; the Hub path is checked at
the HTTP layer against a fake Hub; the token never reaches a file or a log."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from datasets import load_dataset, load_from_disk

from factory.errors import RecipeError
from factory.fingerprint import recipe_fingerprints
from factory.publish import destinations
from factory.publish.destinations import FolderTarget, PublishError
from factory.publish.push import publish_recipe
from factory.recipe import load_recipe
from factory.runner import Runner

RECIPE = """\
name: pub
seed: 0
description: A tiny recipe for the publishing tests.
stages:
  people: {uses: meta_personas, geographies: [WY], n_per_geography: 50}
  election: {uses: questions, sets: [election]}
  adapter: {uses: "publish_stages:adapter", inputs: [election]}
  control: {uses: "publish_stages:adapter_eval", inputs: [adapter]}
"""
SENTINEL = "hf_SENTINELtokenNEVERwritten0123456789"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The recipe built once: census people with a fidelity report, questions, a LoRA adapter and its evaluation."""
    root = tmp_path_factory.mktemp("pub")
    path = root / "recipe.yaml"
    path.write_text(RECIPE)
    runs = root / "runs"
    Runner(load_recipe(path), runs_dir=runs, progress=False).build()
    return path, runs


def profile(tmp_path: Path, **fields) -> str:
    body = {"target": "folder", "path": str(tmp_path / "hub"), "license": "cc-by-4.0", **fields}
    path = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in body.items()))
    return str(path)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def tree_bytes(repo: Path) -> dict[str, bytes]:
    return {
        p.relative_to(repo).as_posix(): p.read_bytes() for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts
    }


def publish(built, prof: str, *overrides: str, **kwargs):
    path, runs = built
    return publish_recipe(load_recipe(path, list(overrides)), runs, profile=prof, **kwargs)


# --- folder target -----------------------------------------------------------------------------------------------
def test_published_configs_cards_and_adapter_load(built, tmp_path):
    from huggingface_hub import DatasetCard, ModelCard

    path, runs = built
    results = publish(built, profile(tmp_path))
    assert [(r.kind, r.repo_id, r.version, r.changed) for r in results] == [
        ("dataset", "pub", "v1", True),
        ("model", "pub-adapter", "v1", True),
    ]
    repo = tmp_path / "hub" / "datasets" / "pub"
    runner = Runner(load_recipe(path), runs_dir=runs, progress=False)
    expected = {
        "people": runner.store("people").dir / "data",
        "people-constraints": runner.store("people").dir / "constraints",
        "people-fidelity": runner.store("people").dir / "fidelity",
        "election": runner.store("election").dir / "data",
        "adapter": runner.store("adapter").dir / "data",
        "control": runner.store("control").dir / "data",
    }
    for config, saved in expected.items():
        loaded = load_dataset(str(repo), config, split="train", cache_dir=str(tmp_path / "hf"))
        original = load_from_disk(str(saved))
        assert loaded.features == original.features, config
        assert loaded.to_list() == original.to_list(), config
    assert sorted(p.name for p in (repo / "data" / "people").iterdir()) == ["train-00000-of-00001.parquet"]

    card = DatasetCard.load(repo / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "cc-by-4.0" and meta["language"] == ["en"]
    assert {"tabular-classification", "question-answering", "text-generation"} <= set(meta["task_categories"])
    assert meta["size_categories"] == ["n<1K"]
    assert {"synthetic", "persona-factory", "census"} <= set(meta["tags"])
    assert meta["pretty_name"] == "pub" and meta["source_datasets"] == ["original"]
    assert [(c["config_name"], c["data_files"]) for c in meta["configs"]] == [
        (c, [{"split": "train", "path": f"data/{c}/train-*"}]) for c in expected
    ]
    text = card.text
    fp = runner.fingerprints["people"]
    for fragment in (
        "uses: meta_personas",  # the recipe, from the manifests
        "| `person_id` | string |",  # the schema
        f"fingerprint `{fp}`",  # lineage
        "ACS 2018 1-year state tables",  # census vintage
        "| table | worst TVD |",  # the fidelity table the stage rendered
        "(assets/people/fidelity.png)",
        "(assets/control/trait_control.png)",
        "Generated text inherits the licence terms of the model that wrote it",
        "`factory-tests/micro-llama`",
        "input: config `election` of this repo",
        "Outputs without rows, so without data files: `control-skipped`",
    ):
        assert fragment in text, fragment
    assert (repo / "assets" / "people" / "fidelity.png").is_file()
    assert str(tmp_path) not in (repo / "README.md").read_text()  # no local path in a card

    model_repo = tmp_path / "hub" / "models" / "pub-adapter"
    mcard = ModelCard.load(model_repo / "README.md")
    mmeta = mcard.data.to_dict()
    assert mmeta["base_model"] == "factory-tests/micro-llama" and mmeta["library_name"] == "peft"
    assert {"trl", "dpo", "lora", "persona-factory"} <= set(mmeta["tags"]) and mmeta["datasets"] == ["pub"]
    for fragment in ("`pub` at revision `v1`, config `election`", "beta: 0.1", "fake-judge", "assets/control/"):
        assert fragment in mcard.text, fragment
    assert not (model_repo / "training_args.bin").exists()  # pickles stay out

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(runner.store("adapter").work_dir / "base")
    model = PeftModel.from_pretrained(base, str(model_repo))
    lora = {k: v for k, v in model.state_dict().items() if "lora_A" in k}
    assert lora and all(torch.count_nonzero(v) for v in lora.values())


def test_one_commit_per_publish_and_tags_never_move(built, tmp_path, monkeypatch):
    prof = profile(tmp_path)
    publish(built, prof)
    repo = tmp_path / "hub" / "datasets" / "pub"
    v1 = git(repo, "rev-parse", "v1^{commit}")
    assert git(repo, "rev-list", "--count", "main") == "1" and git(repo, "cat-file", "-t", "v1") == "tag"
    before = tree_bytes(repo)

    again = publish(built, prof)
    assert [r.changed for r in again] == [False, False] and [r.version for r in again] == ["v1", "v1"]
    assert git(repo, "rev-list", "--count", "main") == "1" and git(repo, "tag") == "v1"
    assert tree_bytes(repo) == before

    (second,) = [r for r in publish(built, prof, "publish.stages=[people, adapter]") if r.kind == "dataset"]
    assert (second.version, second.changed) == ("v2", True)
    assert git(repo, "rev-list", "--count", "main") == "2" and git(repo, "tag").split() == ["v1", "v2"]
    assert git(repo, "rev-parse", "v1^{commit}") == v1  # v1 untouched
    assert not (repo / "data" / "election").exists()  # stale configs leave the working tree...
    assert "data/election/train-00000-of-00001.parquet" in git(repo, "ls-tree", "-r", "--name-only", "v1")  # ...not v1
    assert git(repo, "status", "--porcelain") == ""

    # a version that exists is refused, never overwritten
    monkeypatch.setattr(destinations, "next_version", lambda tags: "v1")
    with pytest.raises(PublishError, match="tag v1 already exists"):
        publish(built, prof)
    assert git(repo, "rev-parse", "v1^{commit}") == v1 and git(repo, "rev-list", "--count", "main") == "2"


@pytest.mark.parametrize("where", ["objects", "tag"])
def test_failed_publish_leaves_no_half_version(built, tmp_path, monkeypatch, where):
    prof = profile(tmp_path)
    publish(built, prof, "publish.stages=[people, election]")
    repo = tmp_path / "hub" / "datasets" / "pub"
    head, before = git(repo, "rev-parse", "main"), tree_bytes(repo)

    if where == "objects":  # half the files are stored, then the disk fills up
        store = FolderTarget._store_objects

        def half(self, repo_dir, sources):
            store(self, repo_dir, sources[: len(sources) // 2])
            raise OSError("No space left on device")

        monkeypatch.setattr(FolderTarget, "_store_objects", half)
    else:  # everything is written, and the process dies just before the tag
        real = destinations._git

        def dies(repo_dir, *args, **kwargs):
            if args[0] == "tag" and "-a" in args:
                raise KeyboardInterrupt
            return real(repo_dir, *args, **kwargs)

        monkeypatch.setattr(destinations, "_git", dies)
    with pytest.raises((PublishError, KeyboardInterrupt)) as info:
        publish(built, prof, "publish.stages=[election]")
    if where == "objects":
        assert "still at v1" in str(info.value) and "\n" not in str(info.value)
    assert git(repo, "tag") == "v1" and git(repo, "rev-parse", "main") == head
    assert git(repo, "status", "--porcelain") == "" and tree_bytes(repo) == before
    assert load_dataset(str(repo), "election", split="train", cache_dir=str(tmp_path / "hf")).num_rows == 3

    monkeypatch.undo()
    (result,) = [r for r in publish(built, prof, "publish.stages=[election]") if r.kind == "dataset"]
    assert result.version == "v2" and git(repo, "rev-list", "--count", "main") == "2"


def test_per_stage_layout_names_upstream_repos_and_versions(built, tmp_path):
    from huggingface_hub import DatasetCard, ModelCard

    results = publish(built, profile(tmp_path), "publish.layout=per_stage", "publish.repo=tiny")
    assert [(r.kind, r.repo_id) for r in results] == [
        ("dataset", "tiny-people"),
        ("dataset", "tiny-election"),
        ("dataset", "tiny-adapter"),
        ("dataset", "tiny-control"),
        ("model", "tiny-adapter"),
    ]
    hub = tmp_path / "hub"
    card = DatasetCard.load(hub / "datasets" / "tiny-adapter" / "README.md")
    assert "input: `tiny-election` at `v1`, config `election`" in card.text
    assert [c["config_name"] for c in card.data.configs] == ["adapter"]
    model = ModelCard.load(hub / "models" / "tiny-adapter" / "README.md")
    assert model.data.datasets == ["tiny-election"] and "`tiny-election` at revision `v1`" in model.text


def test_build_publishes_at_the_end_and_publish_never_changes_fingerprints(write_recipe, tmp_path, cli):
    plain = "name: q\nstages:\n  election: {uses: questions, sets: [election]}\n"
    prof = profile(tmp_path)
    path = write_recipe(plain + f"publish: {{profile: {prof}}}\n")
    assert recipe_fingerprints(load_recipe(path)) == recipe_fingerprints(load_recipe(write_recipe(plain, "plain.yaml")))
    first = cli("build", path, "--runs-dir", tmp_path / "runs", "--no-progress")
    assert first.exit_code == 0, first.output
    assert "dataset q: published v1" in first.stdout
    assert load_dataset(str(tmp_path / "hub" / "datasets" / "q"), "election", cache_dir=str(tmp_path / "hf"))
    again = cli("build", path, "--runs-dir", tmp_path / "runs", "--no-progress")
    assert "dataset q: unchanged (v1, nothing written)" in again.stdout
    only = cli("build", path, "--only", "election", "--runs-dir", tmp_path / "runs", "--no-progress")
    assert "publish: skipped with --only" in only.stdout


def test_push_cli(built, tmp_path, cli, write_recipe):
    path, runs = built
    prof = profile(tmp_path)
    dry = cli("push", path, "--profile", prof, "--runs-dir", runs, "--dry-run")
    assert dry.exit_code == 0 and "dataset pub: would publish v1" in dry.stdout
    assert not (tmp_path / "hub").exists()  # a dry run writes nothing

    unbuilt = write_recipe(RECIPE.replace("n_per_geography: 50", "n_per_geography: 51"), "other.yaml")
    result = cli("push", unbuilt, "--profile", prof, "--runs-dir", runs)
    assert result.exit_code == 1 and result.stderr.strip().count("\n") == 0
    assert "stage 'people' is not built" in result.stderr

    result = cli("push", path, "--profile", "locl", "--runs-dir", runs)
    assert result.exit_code == 2 and "unknown profile 'locl' (did you mean 'local'?)" in result.stderr


@pytest.mark.parametrize(
    "block,fragment",
    [
        ("{profile: locl}", "publish.profile: unknown profile 'locl' (did you mean 'local'?"),
        ("{profile: local, layuot: per_stage}", "publish.layuot: unknown key (did you mean 'layout'?)"),
        ("{profile: local, stages: [electon]}", "publish.stages[0]: unknown stage 'electon'"),
        ("{profile: bad.yaml}", "publish.profile: "),
        ("{profile: secret.yaml}", "a profile never holds a secret"),
        ("{profile: nons.yaml}", "target 'hub' needs a namespace"),
    ],
)
def test_publish_block_errors_are_one_line(block, fragment, write_recipe, tmp_path, cli):
    (tmp_path / "bad.yaml").write_text("target: folder\npath: x\nlicence: mit\n")
    (tmp_path / "secret.yaml").write_text("target: hub\nnamespace: me\ntoken: hf_abc\n")
    (tmp_path / "nons.yaml").write_text("target: hub\n")
    path = write_recipe(f"name: q\nstages:\n  election: {{uses: questions, sets: [election]}}\npublish: {block}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    result = cli("validate", path)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and fragment in result.stderr


# --- the Hub, at the HTTP layer --------------------------------------------------------------------------------
class FakeHub:
    """Just the Hub endpoints publishing uses: repo creation, refs, YAML validation, preupload, commit, tag, and
    file download. Every request is recorded (method, path, body); `fail_commit` makes the commit endpoint fail."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []
        self.repos: dict[str, dict] = {}
        self.fail_commit = False
        self.authorizations: set[str] = set()

    def _repo(self, kind: str, repo_id: str) -> dict | None:
        return self.repos.get(f"{kind}/{repo_id}")

    def handle(self, request):
        import httpx2

        method, path = request.method, request.url.path
        body = request.content
        self.authorizations.add(request.headers.get("authorization", ""))
        info: dict = {}
        parts = path.strip("/").split("/")

        def reply(status=200, payload=None, headers=None, content=None):
            if content is not None:
                return httpx2.Response(status, content=content, headers=headers or {})
            return httpx2.Response(status, json=payload if payload is not None else {}, headers=headers or {})

        if path == "/api/repos/create":
            data = json.loads(body)
            repo_id = f"{data['organization']}/{data['name']}"
            key = f"{data.get('type', 'model')}/{repo_id}"
            self.requests.append((method, path, {"repo": key}))
            if key in self.repos:
                return reply(409, {"error": "You already created this repo", "url": f"https://hub.test/{repo_id}"})
            self.repos[key] = {"commits": [], "tags": {}, "files": {}, "visibility": data.get("visibility")}
            return reply(200, {"url": f"https://hub.test/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":
            self.requests.append((method, path, {}))
            return reply(200, {"errors": [], "warnings": []})
        if parts[0] == "api" and len(parts) >= 5:
            kind, repo_id, action, rev = parts[1][:-1], f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            repo = self._repo(kind, repo_id)
            if repo is None:
                self.requests.append((method, path, {}))
                return reply(404, {"error": "Repository not found"}, headers={"X-Error-Code": "RepoNotFound"})
            if action == "refs":
                self.requests.append((method, path, {}))
                head = repo["commits"][-1]["oid"] if repo["commits"] else None
                branches = [{"name": "main", "ref": "refs/heads/main", "targetCommit": head}] if head else []
                tags = [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": oid} for t, oid in repo["tags"].items()]
                return reply(200, {"branches": branches, "tags": tags, "converts": [], "pullRequests": []})
            if action == "preupload":
                files = json.loads(body)["files"]
                self.requests.append((method, path, {"paths": [f["path"] for f in files]}))
                return reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                             for f in files]})  # fmt: skip
            if action == "commit":
                lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
                header = lines[0]["value"]
                added = {
                    x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"
                }
                deleted = [x["value"]["path"] for x in lines if x["key"] == "deletedFile"]
                info = {"added": sorted(added), "deleted": sorted(deleted), "parent": header.get("parentCommit")}
                self.requests.append((method, path, info))
                if self.fail_commit:  # a hostile or broken server that echoes the request's credentials back
                    text = f"Internal error for {request.headers.get('authorization')}"
                    return reply(500, {"error": text}, headers={"X-Request-Id": "req-1"})
                files = {**repo["files"], **added}
                for d in deleted:
                    files.pop(d, None)
                oid = hashlib.sha1(json.dumps(sorted(files)).encode() + os.urandom(4)).hexdigest()
                repo["commits"].append({"oid": oid, "files": files, "message": header["summary"]})
                repo["files"] = files
                return reply(200, {"commitOid": oid, "commitUrl": f"https://hub.test/{repo_id}/commit/{oid}"})
            if action == "tag":
                data = json.loads(body)
                self.requests.append((method, path, {"tag": data["tag"], "revision": rev}))
                if data["tag"] in repo["tags"]:
                    return reply(409, {"error": "Tag already exists"})
                repo["tags"][data["tag"]] = rev
                return reply(200, {})
        if "resolve" in parts:  # /datasets/org/name/resolve/rev/path or /org/name/resolve/rev/path
            i = parts.index("resolve")
            kind = "dataset" if parts[0] == "datasets" else "model"
            repo_id = "/".join(parts[1:i] if kind == "dataset" else parts[:i])
            rev, file = parts[i + 1], "/".join(parts[i + 2 :])
            self.requests.append((method, path, {}))
            repo = self._repo(kind, repo_id)
            oid = repo["tags"].get(rev, rev) if repo else None
            commit = next((c for c in repo["commits"] if c["oid"] == oid), None) if repo else None
            if commit is None or file not in commit["files"]:
                return reply(404, {"error": "Entry not found"}, headers={"X-Error-Code": "EntryNotFound"})
            content = commit["files"][file]
            headers = {
                "X-Repo-Commit": oid,
                "ETag": f'"{hashlib.sha1(content).hexdigest()}"',
                "Content-Length": str(len(content)),
            }
            return reply(200, headers=headers, content=b"" if method == "HEAD" else content)
        self.requests.append((method, path, {"unhandled": True}))
        return reply(404, {"error": f"fake hub: no route {method} {path}"})

    def calls(self, since: int = 0) -> list[str]:
        """The publishing calls by action (downloads and YAML validation left out)."""
        out = []
        for _, path, _ in self.requests[since:]:
            parts = path.strip("/").split("/")
            if path == "/api/repos/create":
                out.append("create")
            elif parts[0] == "api" and len(parts) >= 5:
                out.append(parts[4])
        return out

    def commits(self, since: int = 0) -> list[dict]:
        return [info for _, path, info in self.requests[since:] if "/commit/" in path]


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    import httpx2
    import huggingface_hub
    from huggingface_hub.utils import _http

    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    hub = FakeHub()

    def client():
        return httpx2.Client(
            transport=httpx2.MockTransport(hub.handle),
            event_hooks={"request": [_http.hf_request_event_hook]},
            follow_redirects=True,
        )

    huggingface_hub.set_client_factory(client)
    yield hub
    huggingface_hub.set_client_factory(_http.default_client_factory)


def hub_profile(tmp_path: Path) -> str:
    path = tmp_path / "hub-profile.yaml"
    path.write_text("target: hub\nnamespace: org\nprivate: true\nendpoint: https://hub.test\nlicense: cc-by-4.0\n")
    return str(path)


def test_hub_publish_http_sequence(built, tmp_path, fake_hub):
    prof = hub_profile(tmp_path)
    results = publish(built, prof, "publish.stages=[people, election, adapter]")
    assert [(r.kind, r.repo_id, r.version, r.changed) for r in results] == [
        ("dataset", "org/pub", "v1", True),
        ("model", "org/pub-adapter", "v1", True),
    ]
    calls = fake_hub.calls()
    # per repo: create, refs (no tags yet: nothing to download), preupload, one commit, then the tag
    assert calls == ["create", "refs", "preupload", "commit", "tag"] * 2, calls
    dataset_commit, model_commit = fake_hub.commits()
    assert dataset_commit["added"] == sorted(
        [
            ".factory/publish.json",
            "README.md",
            "assets/people/fidelity.png",
            "data/adapter/train-00000-of-00001.parquet",
            "data/election/train-00000-of-00001.parquet",
            "data/people-constraints/train-00000-of-00001.parquet",
            "data/people-fidelity/train-00000-of-00001.parquet",
            "data/people/train-00000-of-00001.parquet",
        ]
    )
    assert dataset_commit["deleted"] == [] and dataset_commit["parent"] is None
    assert {".factory/publish.json", "README.md", "adapter_config.json", "adapter_model.safetensors"} <= set(
        model_commit["added"]
    )
    assert "training_args.bin" not in model_commit["added"]
    assert fake_hub.repos["dataset/org/pub"]["visibility"] == "private"
    assert fake_hub.repos["dataset/org/pub"]["tags"] == {"v1": fake_hub.repos["dataset/org/pub"]["commits"][0]["oid"]}

    mark = len(fake_hub.requests)  # unchanged: reads the v1 record, commits nothing, tags nothing
    again = publish(built, prof, "publish.stages=[people, election, adapter]")
    assert [(r.version, r.changed) for r in again] == [("v1", False), ("v1", False)]
    assert "commit" not in fake_hub.calls(mark) and "tag" not in fake_hub.calls(mark)

    mark = len(fake_hub.requests)  # changed: one commit deleting the stale config, a new tag, v1 untouched
    v1 = fake_hub.repos["dataset/org/pub"]["tags"]["v1"]
    (changed,) = [r for r in publish(built, prof, "publish.stages=[election, adapter]") if r.kind == "dataset"]
    assert (changed.version, changed.changed) == ("v2", True)
    (commit,) = [c for c in fake_hub.commits(mark) if "data/adapter/train-00000-of-00001.parquet" in c["added"]]
    assert commit["deleted"] == [
        "assets/people/fidelity.png",
        "data/people-constraints/train-00000-of-00001.parquet",
        "data/people-fidelity/train-00000-of-00001.parquet",
        "data/people/train-00000-of-00001.parquet",
    ]
    assert commit["parent"] == v1
    assert fake_hub.repos["dataset/org/pub"]["tags"]["v1"] == v1 and set(fake_hub.repos["dataset/org/pub"]["tags"]) == {
        "v1",
        "v2",
    }
    assert f"Bearer {SENTINEL}" in fake_hub.authorizations  # the token was used, in headers only


def test_hub_failed_commit_tags_nothing(built, tmp_path, fake_hub):
    prof = hub_profile(tmp_path)
    publish(built, prof, "publish.stages=[election]")
    fake_hub.fail_commit = True
    mark = len(fake_hub.requests)
    with pytest.raises(PublishError) as info:
        publish(built, prof, "publish.stages=[election, adapter]")
    assert "org/pub: the commit failed" in str(info.value) and "\n" not in str(info.value)
    assert SENTINEL not in str(info.value) and "Bearer ***" in str(info.value)  # echoed back by the server, scrubbed
    assert "tag" not in fake_hub.calls(mark)
    repo = fake_hub.repos["dataset/org/pub"]
    assert list(repo["tags"]) == ["v1"] and len(repo["commits"]) == 1


def test_token_never_written_or_logged(built, tmp_path, fake_hub, caplog, capsys, cli):
    caplog.set_level(logging.DEBUG)
    path, runs = built
    assert os.environ["HF_TOKEN"] == SENTINEL
    outputs = [
        cli("push", path, "--profile", profile(tmp_path), "--runs-dir", runs),
        cli("push", path, "--profile", hub_profile(tmp_path), "--runs-dir", runs),
    ]
    fake_hub.fail_commit = True
    (tmp_path / "changed.yaml").write_text(RECIPE + "publish: {stages: [election]}\n")
    failed = cli("push", tmp_path / "changed.yaml", "--profile", hub_profile(tmp_path), "--runs-dir", runs)
    outputs.append(failed)
    assert failed.exit_code == 1 and "the commit failed" in failed.stderr
    assert any(SENTINEL in a for a in fake_hub.authorizations)

    seen = [o.stdout + o.stderr for o in outputs] + [caplog.text, *capsys.readouterr()]
    for root in (tmp_path, runs):
        for p in root.rglob("*"):
            if p.is_file():
                seen.append(p.read_bytes().decode("latin-1"))
    for repo in (tmp_path / "hub").glob("*/*/.git"):  # git objects are compressed: read them back through git
        repo = repo.parent
        seen.append(git(repo, "log", "--all", "-p", "--format=%H %B"))
        seen.append(git(repo, "for-each-ref", "--format=%(contents)", "refs/tags"))
    assert all(SENTINEL not in s for s in seen)
    assert all(SENTINEL[3:] not in s for s in seen)


def test_templates_and_profiles_ship_in_the_package():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    assert (root / "cards").resolve() == root / "factory" / "card_templates"
    assert (root / "push").resolve() == root / "factory" / "push_profiles"
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["factory"]
    assert {"card_templates/**/*", "push_profiles/**/*"} <= set(data)
    for name in ("local", "hub"):
        assert "token:" not in (root / "push" / f"{name}.yaml").read_text()
    with pytest.raises(PublishError, match="set `namespace`"):
        publish_recipe(load_recipe(root / "recipes" / "quickstart.yaml"), "/nonexistent", profile="hub")


# --- live ----------------------------------------------------------------------------------------------------------
@pytest.mark.live
@pytest.mark.skipif(
    not (os.environ.get("HF_TOKEN") and os.environ.get("FACTORY_TEST_NAMESPACE")),
    reason="needs HF_TOKEN and FACTORY_TEST_NAMESPACE (a user or organisation to create a private test repo in)",
)
def test_live_hub_publish(tmp_path):
    import uuid

    from datasets import Dataset
    from huggingface_hub import DatasetCard

    from factory.profiles import Profile
    from factory.publish.destinations import HubTarget

    target = HubTarget(Profile(target="hub", namespace=os.environ["FACTORY_TEST_NAMESPACE"], private=True))
    repo_id = target.repo_id(f"persona-factory-test-{uuid.uuid4().hex[:8]}")
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    Dataset.from_list([{"a": 1}, {"a": 2}]).to_parquet(str(tmp_path / "data" / "tiny" / "train-00000-of-00001.parquet"))
    (tmp_path / "README.md").write_text(
        textwrap.dedent("""\
        ---
        license: cc-by-4.0
        configs:
        - config_name: tiny
          data_files:
          - split: train
            path: data/tiny/train-*
        ---
        # test
        """)
    )
    files = {
        "README.md": tmp_path / "README.md",
        "data/tiny/train-00000-of-00001.parquet": next(tmp_path.rglob("*.parquet")),
    }
    try:
        first = target.publish("dataset", repo_id, files, "live test")
        assert (first.version, first.changed) == ("v1", True)
        assert target.publish("dataset", repo_id, files, "live test").changed is False
        assert DatasetCard.load(repo_id, repo_type="dataset").data.license == "cc-by-4.0"
        refs = target.api.list_repo_refs(repo_id, repo_type="dataset")
        assert [t.name for t in refs.tags] == ["v1"]
        assert load_dataset(repo_id, "tiny", split="train", revision="v1").num_rows == 2
    finally:
        target.api.delete_repo(repo_id, repo_type="dataset", missing_ok=True)
