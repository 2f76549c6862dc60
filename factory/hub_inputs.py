"""Stage inputs read from published datasets: `hub://org/name@revision[:config]`, or offline
`hub+file://path/to/repo@vN[:config]` (a folder written by the `folder` publish target; a relative path is taken
from the recipe's folder).

    stages:
      answers:
        uses: answers
        inputs: [hub://my-org/quickstart@v3:people, questions]

The revision is required: a pinned tag (or commit) is what makes a build reproducible, and it is what the
fingerprint hashes (repo, revision and config; for a folder, the commit sha the tag names, and the input as
written, so a relative path survives moving a checkout). A branch name is accepted but its moving content is then
not tracked. The stage sees the input under the
name written in the recipe. Parsing needs no network and no heavy import (`factory validate`); the dataset is
downloaded (or read from the folder's git history at that tag) once per build machine into
`runs/<recipe>/.cache/hub/<fingerprint>/`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from factory.errors import DataError

HUB = "hub://"
FOLDER = "hub+file://"
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REV_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
_CONFIG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class HubRef:
    """A parsed hub input. `repo` is `org/name` for the Hub, an absolute folder for `hub+file://`."""

    written: str
    kind: Literal["hub", "folder"]
    repo: str
    revision: str
    config: str | None

    @property
    def label(self) -> str:
        return f"{self.repo}@{self.revision}" + (f":{self.config}" if self.config else "")


def is_hub(text: str) -> bool:
    return text.startswith((HUB, FOLDER))


def parse(text: str, base_dir: Path | str = ".") -> HubRef:
    """Parse a hub input; raise ValueError with a one-line reason."""
    kind: Literal["hub", "folder"] = "hub" if text.startswith(HUB) else "folder"
    rest = text[len(HUB) :] if kind == "hub" else text[len(FOLDER) :]
    where, at, tail = rest.rpartition("@")
    if not at or not where:
        example = "hub://org/name@v1:config" if kind == "hub" else "hub+file:///path/to/repo@v1:config"
        raise ValueError(f"'{text}': pin a revision, e.g. {example}")
    revision, colon, config = tail.partition(":")
    if not _REV_RE.match(revision) or ".." in revision:
        raise ValueError(f"'{text}': '{revision}' is not a revision (a tag like v1, a commit sha or a branch)")
    if colon and not _CONFIG_RE.match(config):
        raise ValueError(f"'{text}': '{config}' is not a config name")
    if kind == "hub":
        if not _REPO_RE.match(where):
            raise ValueError(f"'{text}': '{where}' is not a Hub dataset id (org/name)")
        repo = where
    else:
        path = Path(where).expanduser()
        repo = str((path if path.is_absolute() else Path(base_dir) / path).resolve())
    return HubRef(text, kind, repo, revision, config or None)


@cache
def folder_commit(repo: str, revision: str) -> str:
    if not (Path(repo) / ".git").exists():
        raise DataError(f"{repo}: not a published folder repo (no .git); publish there first or fix the path")
    r = subprocess.run(
        ["git", "-C", repo, "rev-parse", "--verify", "-q", f"{revision}^{{commit}}"], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise DataError(f"{repo}: no revision '{revision}' (published versions are tags v1, v2, ...)")
    return r.stdout.strip()


def fingerprint(ref: HubRef) -> str:
    """What a downstream fingerprint records for this input: repo and revision (the commit sha for a folder)."""
    if ref.kind == "folder":
        payload = {"folder_commit": folder_commit(ref.repo, ref.revision), "config": ref.config}
    else:
        payload = {"repo": ref.repo, "revision": ref.revision, "config": ref.config}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(ref: HubRef) -> dict[str, str | None]:
    """Lineage recorded in the reading stage's manifest (and from there, in cards)."""
    info: dict[str, str | None] = {"hub": ref.written, "repo": ref.repo, "revision": ref.revision, "config": ref.config}
    if ref.kind == "folder":
        info["commit"] = folder_commit(ref.repo, ref.revision)
    return info


def materialize(ref: HubRef, cache_root: Path) -> Path:
    """The input as a saved dataset folder (for `load_from_disk`), fetched once and then reused."""
    from filelock import FileLock

    fp = fingerprint(ref)
    target = Path(cache_root) / fp
    data = target / "data"
    marker = target / "_COMPLETE"
    if marker.is_file():
        return data
    target.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target / ".lock")):
        if marker.is_file():
            return data
        scratch = target / "scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            dataset = _load(ref, scratch)
            tmp = target / "data.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            dataset.save_to_disk(str(tmp), num_shards=1 if len(dataset) == 0 else None)
            shutil.rmtree(data, ignore_errors=True)
            tmp.rename(data)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        marker.write_text(json.dumps({"input": ref.written, "fingerprint": fp}) + "\n")
    return data


def _load(ref: HubRef, scratch: Path):
    import datasets

    if ref.kind == "folder":
        source = scratch / "repo"
        export(ref, source)
        where, kwargs = str(source), {}
    else:
        where, kwargs = ref.repo, {"revision": ref.revision}
    try:
        return datasets.load_dataset(where, ref.config, split="train", cache_dir=str(scratch / "hf"), **kwargs)
    except Exception as exc:  # datasets raises many kinds; the user needs one line naming the input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{ref.written}: cannot load: {first}") from None


def export(ref: HubRef, dest: Path) -> None:
    """The folder repo's files at the pinned revision (not its working tree, which may be at a later version)."""
    import tarfile

    commit = folder_commit(ref.repo, ref.revision)
    dest.mkdir(parents=True)
    archive = dest.parent / "repo.tar"  # a file, not a pipe in memory: published datasets can be large
    r = subprocess.run(
        ["git", "-C", ref.repo, "archive", "--format=tar", "-o", str(archive), commit], capture_output=True
    )
    if r.returncode != 0:
        raise DataError(f"{ref.written}: git archive failed: {r.stderr.decode(errors='replace').strip()}")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
