"""Versions of a published repo: a content hash of its file set and tags `v1`, `v2` ... that are never moved.

Every publish writes `.factory/publish.json` (the version, the content hash and each file's sha256) into the repo.
A publish whose content hash equals the latest version's is a no-op; any change gets the next version. The record
itself is left out of the hash (it names the version), and nothing time-dependent enters the file set, so the same
stage outputs always hash the same.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PUBLISH_FILE = ".factory/publish.json"
TAG_RE = re.compile(r"^v([1-9][0-9]*)$")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(files: dict[str, Path]) -> dict[str, str]:
    return {p: file_sha256(f) for p, f in sorted(files.items()) if p != PUBLISH_FILE}


def content_hash(hashes: dict[str, str]) -> str:
    """sha256 over (path, file sha256) pairs in path order."""
    h = hashlib.sha256()
    for path, digest in sorted(hashes.items()):
        h.update(f"{path}\0{digest}\n".encode())
    return h.hexdigest()


def versions(tags: Iterable[str]) -> list[int]:
    return sorted(int(m.group(1)) for t in tags if (m := TAG_RE.match(t)))


def latest_version(tags: Iterable[str]) -> str | None:
    found = versions(tags)
    return f"v{found[-1]}" if found else None


def next_version(tags: Iterable[str]) -> str:
    found = versions(tags)
    return f"v{found[-1] + 1 if found else 1}"


def record(version: str, digest: str, hashes: dict[str, str], extra: dict[str, Any] | None = None) -> bytes:
    """The bytes of `.factory/publish.json`."""
    body = {"format": 1, "version": version, "content_hash": digest, "files": hashes, **(extra or {})}
    return (json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
