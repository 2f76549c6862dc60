"""Stage fingerprints: what a stage's output depends on, hashed.

fingerprint = sha256 of the canonical JSON of
    stage name, `uses`, stage VERSION,
    options minus operational fields (batch sizes, concurrency, URLs, devices),
    the semantic config of the backends the stage names,
    sha256 of every referenced file (prompts, data; null for an optional file not written yet),
    the fingerprints of its inputs (for a hub:// input: its repo, revision and config),
    the stage's derived seed.
Two builds with the same fingerprint must produce the same rows, so anything else that changes output must bump
the stage's VERSION.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from factory.options import DataFile, OptionalDataFile, backend_refs, data_files, semantic_dump

_FILE_CACHE: dict[tuple[str, int, int], str] = {}


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_file(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _FILE_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_CACHE[key] = h.hexdigest()
    return _FILE_CACHE[key]


def sha256_path(path: Path) -> str:
    """A file's sha256, or for a folder the sha256 of its files' relative names and hashes."""
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def referenced_backends(options: Any) -> list[str]:
    """Backend names a stage's options refer to: every `BackendRef` value, in nested option blocks too."""
    return [name for _, name in backend_refs(options)]


def stage_payload(recipe: Any, name: str, upstream: dict[str, str]) -> dict[str, Any]:
    entry = recipe.stages[name]
    payload = {
        "stage": name,
        "uses": entry.uses,
        "version": entry.spec.version,
        "options": semantic_dump(entry.options),
        "backends": {b: semantic_dump(recipe.backends[b]) for b in referenced_backends(entry.options)},
        "files": {
            **{str(f): _file_hash(f) for f in data_files(entry.options)},
            **{
                f"builtin:{p.parent.name}/{p.name}": sha256_path(p)
                for p in (entry.spec.files(entry.options) if entry.spec.files else [])
            },
        },
        "inputs": {i: _input_fingerprint(entry, i, upstream) for i in entry.inputs},
        "seed": recipe.stage_seed(name),
    }
    if getattr(entry, "named_roles", False):  # role -> input, when the recipe named them (a list is matched)
        payload["roles"] = {r: list(v) if isinstance(v, list) else v for r, v in entry.roles.items()}
    return payload


def _file_hash(f: DataFile) -> str | None:
    if isinstance(f, OptionalDataFile) and not f.resolved.is_file():
        return None  # not written yet (review decisions before the first import)
    return sha256_path(f.resolved)


def _input_fingerprint(entry: Any, name: str, upstream: dict[str, str]) -> str:
    hub = getattr(entry, "hub", {})
    if name in hub:  # a published dataset: its repo and pinned revision (a folder's tag commit), not its bytes
        from factory.hub_inputs import fingerprint as hub_fingerprint

        return hub_fingerprint(hub[name])
    return upstream[name]


def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(payload)).hexdigest()[:16]


def recipe_fingerprints(recipe: Any) -> dict[str, str]:
    """Fingerprint of every stage, in build order (each depends on its inputs' fingerprints)."""
    fps: dict[str, str] = {}
    for name in recipe.order:
        fps[name] = fingerprint(stage_payload(recipe, name, fps))
    return fps
