"""Where repos are published: a folder of git repos laid out like Hub repos, or the Hub itself.

Both follow one contract. A publish is one commit holding the whole file set (additions, and deletions of files the
previous version had and this one has not), then an annotated tag `vN` on that commit. A tag is created, never
moved: a tag that already exists is refused. When the file set hashes like the latest version's, nothing is
written (a no-op). A failure before the tag leaves no version behind:

- `FolderTarget` writes blobs, a tree and a commit object into the repo's object store with a private index (the
  working tree and branch are not touched), tags the commit, advances `main` (compare-and-swap on its old value),
  then checks the new tree out. A crash before the tag leaves only unreferenced objects, which git ignores.
- `HubTarget` uploads and commits in one `HfApi.create_commit` (with `parent_commit`, so a concurrent publish
  fails instead of interleaving), then creates the tag. A failed commit creates nothing and tags nothing.

The Hub token is `huggingface_hub`'s business (`HF_TOKEN` or the login store, read per request); it is never
passed through, logged or written here, and error messages are scrubbed of it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from factory.errors import FactoryError
from factory.profiles import Profile
from factory.publish.versions import PUBLISH_FILE, content_hash, file_hashes, latest_version, next_version, record

log = logging.getLogger(__name__)

Kind = Literal["dataset", "model"]
_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "persona-factory",
    "GIT_AUTHOR_EMAIL": "persona-factory@localhost",
    "GIT_COMMITTER_NAME": "persona-factory",
    "GIT_COMMITTER_EMAIL": "persona-factory@localhost",
}
_GIT_CONFIG = ["-c", "commit.gpgSign=false", "-c", "tag.gpgSign=false", "-c", "core.autocrlf=false"]


class PublishError(FactoryError):
    """A publish failed; the repo is still at its previous version."""

    exit_code = 1


@dataclass
class Published:
    """A repo's latest version as recorded in its `.factory/publish.json`."""

    version: str
    content_hash: str
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class PublishResult:
    kind: Kind
    repo_id: str
    version: str
    changed: bool  # False: the content equals the latest version's, nothing was written
    location: str
    commit: str | None = None
    files: int = 0


class Target(Protocol):
    """A place repos are published to."""

    name: str

    def repo_id(self, name: str) -> str: ...

    def location(self, kind: Kind, repo_id: str) -> str: ...

    def latest(self, kind: Kind, repo_id: str) -> Published | None: ...

    def publish(self, kind: Kind, repo_id: str, files: dict[str, Path], message: str) -> PublishResult: ...


def prepare(files: dict[str, Path]) -> tuple[dict[str, str], str]:
    """Per-file sha256 and the content hash of a file set."""
    hashes = file_hashes(files)
    return hashes, content_hash(hashes)


def redact(text: str) -> str:
    """`text` without the Hub token (the current one, and anything shaped like one)."""
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # a broken login store must not turn a scrub into a crash
        token = None
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)


def one_line(exc: BaseException) -> str:
    """`Type: first line` of an error, with the Hub's own message when it sent one, scrubbed of the token."""
    text = str(exc).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    server = " ".join(str(getattr(exc, "server_message", None) or "").split())
    if server and server not in first:
        first = f"{first}: {server}" if first else server
    return redact(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


# --- folder ---------------------------------------------------------------------------------------------------------
class FolderTarget:
    """Git repositories under `<root>/datasets/<repo>` and `<root>/models/<repo>`, laid out like Hub repos.

    `datasets.load_dataset(<repo folder>, <config>)` reads the working tree (the latest version); a recipe reads a
    pinned version with `hub+file://<repo folder>@vN:<config>`.
    """

    name = "folder"

    def __init__(self, root: Path, namespace: str | None = None):
        self.root = Path(root)
        self.namespace = namespace

    def repo_id(self, name: str) -> str:
        return f"{self.namespace}/{name}" if self.namespace else name

    def repo_dir(self, kind: Kind, repo_id: str) -> Path:
        return self.root / f"{kind}s" / repo_id

    def location(self, kind: Kind, repo_id: str) -> str:
        return str(self.repo_dir(kind, repo_id))

    def latest(self, kind: Kind, repo_id: str) -> Published | None:
        repo = self.repo_dir(kind, repo_id)
        if not (repo / ".git").exists():
            return None
        return self._latest(repo)[1]

    def _latest(self, repo: Path) -> tuple[list[str], Published | None]:
        tags = _git(repo, "tag", "--list", "v*").split()
        version = latest_version(tags)
        if version is None:
            return tags, None
        rec = json.loads(_git(repo, "show", f"{version}:{PUBLISH_FILE}"))
        return tags, Published(version, rec["content_hash"], rec.get("files", {}))

    def publish(self, kind: Kind, repo_id: str, files: dict[str, Path], message: str) -> PublishResult:
        from filelock import FileLock

        repo = self.repo_dir(kind, repo_id)
        repo.parent.mkdir(parents=True, exist_ok=True)
        hashes, digest = prepare(files)
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(locks / f"{kind}s--{repo_id.replace('/', '--')}.lock")):
            if not (repo / ".git").exists():
                repo.mkdir(exist_ok=True)
                _git(repo, "init", "-q", "-b", "main")
            tags, prev = self._latest(repo)
            if prev is not None and prev.content_hash == digest:
                commit = self._finish_checkout(repo, prev.version)
                log.info("%s: unchanged since %s", repo, prev.version)
                return PublishResult(kind, repo_id, prev.version, False, str(repo), commit)
            version = next_version(tags)
            rec = record(version, digest, hashes, {"repo": repo_id, "message": message})
            try:
                with tempfile.TemporaryDirectory(prefix="factory-publish-") as tmp:
                    rec_path = Path(tmp) / "publish.json"
                    rec_path.write_bytes(rec)
                    commit, parent = self._commit(repo, {**files, PUBLISH_FILE: rec_path}, version, message, Path(tmp))
            except Exception as exc:  # nothing visible was written: say so, in one line
                still = prev.version if prev else "no version"
                raise PublishError(f"{repo}: publishing {version} failed ({one_line(exc)}); still at {still}") from exc
            # the version exists from here on: a tag is created, never moved (git refuses an existing name)
            if version in _git(repo, "tag", "--list", version).split():
                raise PublishError(f"{repo}: tag {version} already exists; versions are never moved")
            _git(repo, "tag", "-a", version, "-m", f"{version}: {message}\n\ncontent sha256 {digest}", commit)
            _git(repo, "update-ref", "-m", f"publish {version}", "refs/heads/main", commit, parent or "0" * 40)
            _git(repo, "reset", "-q", "--hard")
        log.info("%s: published %s (%d files)", repo, version, len(files))
        return PublishResult(kind, repo_id, version, True, str(repo), commit, len(files))

    def _finish_checkout(self, repo: Path, version: str) -> str | None:
        """After a publish cut short between its tag and its checkout: move `main` up to the tag (only forward)
        and check it out."""
        tagged, head = _rev(repo, version), _rev(repo, "refs/heads/main")
        if tagged and head != tagged and (head is None or _is_ancestor(repo, head, tagged)):
            _git(repo, "update-ref", "refs/heads/main", tagged, head or "0" * 40)
        if _git(repo, "status", "--porcelain", "--untracked-files=no").strip() or head != tagged:
            _git(repo, "reset", "-q", "--hard")
        return tagged

    def _commit(
        self, repo: Path, files: dict[str, Path], version: str, message: str, tmp: Path
    ) -> tuple[str, str | None]:
        """A commit object holding exactly `files`, written beside the branch (nothing visible changes)."""
        env = {"GIT_INDEX_FILE": str(tmp / "index")}
        paths = sorted(files)
        shas = self._store_objects(repo, [files[p] for p in paths])
        entries = "".join(f"100644 blob {sha}\t{path}\n" for path, sha in zip(paths, shas))
        _git(repo, "update-index", "--add", "--index-info", stdin=entries, env=env)
        tree = _git(repo, "write-tree", env=env).strip()
        parent = _rev(repo, "refs/heads/main")
        args = ["commit-tree", tree, "-m", f"Publish {version}: {message}"]
        if parent:
            args += ["-p", parent]
        return _git(repo, *args).strip(), parent

    def _store_objects(self, repo: Path, sources: list[Path]) -> list[str]:
        """Blobs for the files' bytes (no filters, no attributes: what is published is exactly what is stored)."""
        listing = "".join(f"{Path(s).resolve()}\n" for s in sources)
        out = _git(repo, "hash-object", "-w", "--no-filters", "--stdin-paths", stdin=listing).split()
        if len(out) != len(sources):
            raise PublishError(f"{repo}: git stored {len(out)} of {len(sources)} files")
        return out


def _rev(repo: Path, ref: str) -> str | None:
    r = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "-q", f"{ref}^{{commit}}"], capture_output=True, text=True
    )
    return r.stdout.strip() if r.returncode == 0 else None


def _is_ancestor(repo: Path, old: str, new: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", old, new]).returncode == 0


def _git(repo: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, **_GIT_IDENTITY, **(env or {})}
    r = subprocess.run(
        ["git", "-C", str(repo), *_GIT_CONFIG, *args], capture_output=True, text=True, input=stdin, env=full_env
    )
    if r.returncode != 0:
        detail = (r.stderr.strip().splitlines() or ["no message"])[-1]
        raise PublishError(f"{repo}: git {args[0]} failed: {redact(detail)}")
    return r.stdout


# --- hub ------------------------------------------------------------------------------------------------------------
class HubTarget:
    """Repos on the Hub through `huggingface_hub.HfApi`; the token is the one `huggingface_hub` finds itself."""

    name = "hub"

    def __init__(self, profile: Profile):
        from huggingface_hub import HfApi

        if profile.namespace == "your-org":
            raise PublishError("publish profile: set `namespace` to your Hub user or organisation (it says your-org)")
        self.namespace = profile.namespace
        self.private = profile.private
        self.api = HfApi(endpoint=profile.endpoint)

    def repo_id(self, name: str) -> str:
        return f"{self.namespace}/{name}"

    def location(self, kind: Kind, repo_id: str) -> str:
        return f"{self.api.endpoint}/{'datasets/' if kind == 'dataset' else ''}{repo_id}"

    def _call(self, what: str, repo_id: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FactoryError:
            raise
        except Exception as exc:  # HTTP, network, validation: one scrubbed line naming the step
            raise PublishError(f"{repo_id}: {what} failed: {one_line(exc)}") from None

    def latest(self, kind: Kind, repo_id: str) -> Published | None:
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            refs = self.api.list_repo_refs(repo_id, repo_type=kind)
        except RepositoryNotFoundError:
            return None
        except Exception as exc:
            raise PublishError(f"{repo_id}: listing tags failed: {one_line(exc)}") from None
        return self._record(kind, repo_id, latest_version(t.name for t in refs.tags))

    def _record(self, kind: Kind, repo_id: str, version: str | None) -> Published | None:
        if version is None:
            return None
        with tempfile.TemporaryDirectory(prefix="factory-hub-") as tmp:
            path = self._call(
                f"reading {PUBLISH_FILE} at {version}",
                repo_id,
                self.api.hf_hub_download,
                repo_id,
                PUBLISH_FILE,
                repo_type=kind,
                revision=version,
                cache_dir=tmp,
            )
            rec = json.loads(Path(path).read_text())
        return Published(version, rec["content_hash"], rec.get("files", {}))

    def publish(self, kind: Kind, repo_id: str, files: dict[str, Path], message: str) -> PublishResult:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        hashes, digest = prepare(files)
        api = self.api
        self._call(
            "creating the repo", repo_id, api.create_repo, repo_id, repo_type=kind, private=self.private, exist_ok=True
        )
        refs = self._call("listing tags", repo_id, api.list_repo_refs, repo_id, repo_type=kind)
        tags = [t.name for t in refs.tags]
        head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
        prev = self._record(kind, repo_id, latest_version(tags))
        location = self.location(kind, repo_id)
        if prev is not None and prev.content_hash == digest:
            log.info("%s: unchanged since %s", repo_id, prev.version)
            return PublishResult(kind, repo_id, prev.version, False, location)
        version = next_version(tags)
        rec = record(version, digest, hashes, {"repo": repo_id, "message": message})
        ops: list[Any] = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in sorted(files.items())]
        ops.append(CommitOperationAdd(path_in_repo=PUBLISH_FILE, path_or_fileobj=rec))
        stale = sorted(set(prev.files if prev else {}) - set(files))
        ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
        info = self._call(
            "the commit",
            repo_id,
            api.create_commit,
            repo_id,
            ops,
            commit_message=f"Publish {version}: {message}",
            commit_description=f"persona-factory publish, content sha256 {digest}",
            repo_type=kind,
            parent_commit=head,
        )
        # only now does the version exist; exist_ok=False: an existing tag is an error, never overwritten
        self._call(
            f"creating tag {version}",
            repo_id,
            api.create_tag,
            repo_id,
            tag=version,
            revision=info.oid,
            tag_message=f"{version}: {message}",
            repo_type=kind,
            exist_ok=False,
        )
        log.info("%s: published %s (%d files)", repo_id, version, len(files))
        return PublishResult(kind, repo_id, version, True, location, info.oid, len(files))


def make_target(profile: Profile, runs_dir: Path, recipe: str) -> Target:
    if profile.target == "hub":
        return HubTarget(profile)
    return FolderTarget(profile.root(runs_dir, recipe), profile.namespace)
