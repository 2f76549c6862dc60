"""On-disk layout of stage outputs, batch checkpoints, manifests and completion markers.

    runs/<recipe>/<stage>/<fingerprint>/
        data/              the dataset (`Dataset.save_to_disk`)
        failures/          rows that failed validation, with their reason (only when there are any)
        <extra>/           further named datasets of the stage (e.g. meta_personas' fidelity report)
        artifacts/         plots and other files the stage's summary wrote
        manifest.json      config, inputs, versions, seed, counts, timings, metrics
        _COMPLETE          written last; its presence is what "finished" means
        work/              scratch that survives a crash (request caches of LLM stages)
        .partial/          while running: plan.json and one checkpoint folder per finished batch

Every write goes to a temporary name and is renamed into place, so a killed process leaves either a finished
batch or nothing, never half a batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "_COMPLETE"


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class StageStore:
    def __init__(self, runs_dir: Path, recipe: str, stage: str, fingerprint: str):
        self.dir = Path(runs_dir) / recipe / stage / fingerprint
        self.fingerprint = fingerprint

    data_dir = property(lambda self: self.dir / "data")
    failures_dir = property(lambda self: self.dir / "failures")
    manifest_path = property(lambda self: self.dir / "manifest.json")
    marker_path = property(lambda self: self.dir / MARKER)
    partial_dir = property(lambda self: self.dir / ".partial")
    work_dir = property(lambda self: self.dir / "work")

    def view(self) -> Upstream:
        """This output as a reader sees it (manifest, artifacts, datasets): what stages and publishing get."""
        return Upstream(self.dir.parent.name, self.fingerprint, str(self.dir))

    # --- completion -------------------------------------------------------------------------------------------
    def is_complete(self) -> bool:
        return self.marker_path.is_file()

    def marker(self) -> dict[str, Any]:
        return _read_json(self.marker_path)

    def manifest(self) -> dict[str, Any]:
        return _read_json(self.manifest_path)

    def damage(self, full: bool = True) -> str | None:
        """Why a finished output cannot be trusted (one line), or None. Checks the marker and manifest parse, the
        data folder is there with the files and sizes the marker recorded, and (`full`) that its bytes still hash
        to the marker's content hash, so a truncated, deleted or edited output is rebuilt, never reused."""
        try:
            marker = self.marker()
            self.manifest()
            expected = marker["content_hash"], int(marker["rows"]), int(marker["failures"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"its marker or manifest is unreadable ({type(exc).__name__})"
        if not self.data_dir.is_dir():
            return "its data/ folder is missing"
        files = marker.get("files")
        if isinstance(files, dict):
            for name, size in files.items():
                path = self.data_dir / name
                if not path.is_file() or path.stat().st_size != size:
                    return f"data/{name} is missing or changed size"
        if full and content_hash(self.data_dir) != expected[0]:
            return "data/ no longer matches the content hash its marker recorded"
        return None

    def invalidate(self) -> None:
        """Forget a finished output (its marker goes first, so a crash midway leaves it 'not finished')."""
        self.marker_path.unlink(missing_ok=True)
        shutil.rmtree(self.partial_dir, ignore_errors=True)

    # --- batches ----------------------------------------------------------------------------------------------
    def load_plan(self) -> list[Any] | None:
        """The saved batch plan; None when there is none or it is unreadable (the stage plans again: a plan is
        a pure function of its options and inputs, so the finished batches still fit it)."""
        path = self.partial_dir / "plan.json"
        try:
            batches = json.loads(path.read_text())["batches"] if path.is_file() else None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return batches if isinstance(batches, list) else None

    def save_plan(self, batches: list[Any]) -> None:
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.partial_dir / "plan.json", {"batches": batches})

    def batch_dir(self, index: int) -> Path:
        return self.partial_dir / f"batch-{index:06d}"

    def done_batches(self) -> set[int]:
        """Indices of the batch checkpoints that are whole; a damaged one (truncated, unreadable) is removed, so it
        runs again instead of wedging the stage."""
        if not self.partial_dir.is_dir():
            return set()
        done = set()
        for p in self.partial_dir.glob("batch-*"):
            index = p.name.removeprefix("batch-")
            if not index.isdigit() or not p.is_dir():
                continue
            if _batch_ok(p):
                done.add(int(index))
            else:
                shutil.rmtree(p, ignore_errors=True)
        return done

    def save_batch(
        self,
        index: int,
        table: Any,
        failures: list[dict],
        metrics: dict[str, float],
        extras: dict[str, Any] | None = None,
    ) -> None:
        final = self.batch_dir(index)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _write_arrow(tmp / "rows.arrow", table)
        for name, extra in (extras or {}).items():
            _write_arrow(tmp / f"extra-{name}.arrow", extra)
        with open(tmp / "failures.jsonl", "w") as f:
            f.writelines(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in failures)
        write_json_atomic(tmp / "meta.json", {"rows": table.num_rows, "failures": len(failures), "metrics": metrics})
        os.replace(tmp, final)  # the rename is the batch's completion marker

    def load_batch(self, index: int) -> tuple[Any, list[dict], dict[str, Any]]:
        d = self.batch_dir(index)
        # split on "\n" only: str.splitlines() also breaks at \x1c, \x85, \u2028..., which raw model text may hold
        failures = [json.loads(line) for line in (d / "failures.jsonl").read_text().split("\n") if line]
        return _read_arrow(d / "rows.arrow"), failures, self.batch_meta(index)

    def batch_meta(self, index: int) -> dict[str, Any]:
        return _read_json(self.batch_dir(index) / "meta.json")

    def load_batch_extras(self, index: int) -> dict[str, Any]:
        d = self.batch_dir(index)
        return {p.stem.removeprefix("extra-"): _read_arrow(p) for p in sorted(d.glob("extra-*.arrow"))}

    # --- finishing --------------------------------------------------------------------------------------------
    def finalize(
        self, dataset: Any, failures: Any | None, manifest: dict[str, Any], extras: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Write data, failures, extra datasets, manifest, then the marker; returns the marker."""
        outputs = [(self.data_dir, dataset), (self.failures_dir, failures)]
        outputs += [(self.dir / name, ds) for name, ds in (extras or {}).items()]
        for target, ds in outputs:
            shutil.rmtree(target, ignore_errors=True)
            if ds is None:
                continue
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            # an empty dataset still gets one (empty) shard, or load_from_disk cannot open it
            ds.save_to_disk(str(tmp), num_shards=1 if len(ds) == 0 else None)
            os.replace(tmp, target)
        marker = {
            "fingerprint": self.fingerprint,
            "content_hash": content_hash(self.data_dir),
            "rows": manifest["rows"],
            "failures": manifest["failures"],
            "files": {p.relative_to(self.data_dir).as_posix(): p.stat().st_size for p in _files(self.data_dir)},
        }
        manifest = {**manifest, "content_hash": marker["content_hash"]}
        write_json_atomic(self.manifest_path, manifest)
        write_json_atomic(self.marker_path, marker)
        shutil.rmtree(self.partial_dir, ignore_errors=True)
        return marker


def _write_arrow(path: Path, table: Any) -> None:
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _read_arrow(path: Path) -> Any:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _read_json(path: Path) -> dict[str, Any]:
    obj = json.loads(path.read_text())
    if not isinstance(obj, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return obj


def _batch_ok(folder: Path) -> bool:
    """A checkpoint is whole when its metadata parses, its failures are JSON lines and its Arrow file opens."""
    import pyarrow as pa

    try:
        meta = _read_json(folder / "meta.json")
        int(meta["rows"])
        for line in (folder / "failures.jsonl").read_text().split("\n"):
            if line:
                json.loads(line)
        with pa.memory_map(str(folder / "rows.arrow")) as source:
            reader = pa.ipc.open_file(source)
            rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        for extra in folder.glob("extra-*.arrow"):
            with pa.memory_map(str(extra)) as source:
                pa.ipc.open_file(source)
        return rows == int(meta["rows"])
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return False


def content_hash(folder: Path) -> str:
    """sha256 over a saved dataset's files (names and bytes), to tell whether an output really changed."""
    h = hashlib.sha256()
    for path in _files(folder):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Upstream:
    """A finished input as a stage sees it: its fingerprint, manifest, content hash, artifacts and own inputs.

    Read-only and picklable (it holds a folder path), so it travels with the stage context to any executor; it
    and `StageStore` are the only code that knows how a stage folder is laid out. A `hub://` input has no
    manifest (an empty one) and no artifacts.
    """

    name: str  # the stage (or hub:// dataset) it is
    fingerprint: str
    path: str  # the stage folder (for a hub input, the fetched dataset's folder)

    @property
    def manifest(self) -> dict[str, Any]:
        path = Path(self.path) / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def content_hash(self) -> str | None:
        return self.manifest.get("content_hash")

    @property
    def uses(self) -> str | None:
        return self.manifest.get("uses")

    def artifact(self, relative: str) -> Path:
        """A file or folder the stage wrote under its artifacts (it may not exist); never outside them."""
        return _inside(Path(self.path) / "artifacts", relative, f"{self.name}'s artifacts")

    def artifacts(self, pattern: str = "*") -> list[Path]:
        return sorted((Path(self.path) / "artifacts").glob(pattern))

    def file(self, relative: str) -> Path:
        """A file the stage wrote in its folder, by the relative path its manifest gives (it may not exist)."""
        return _inside(Path(self.path), relative, f"{self.name}'s folder")

    def dataset_dir(self, name: str = "data") -> Path:
        """The saved folder of one of its datasets (`data`, or an extra such as `fidelity`)."""
        if name in ("failures", "work", "artifacts", ".partial") or not name.replace("_", "a").isalnum():
            raise ValueError(f"'{name}' is not a dataset of {self.name}")
        return Path(self.path) / name

    def data(self) -> Any:
        from datasets import load_from_disk

        return load_from_disk(str(Path(self.path) / "data"))

    def inputs(self) -> dict[str, Upstream]:
        """The finished inputs this stage was built from (by stage name), as its manifest records them."""
        out = {}
        for name, rec in self.manifest.get("inputs", {}).items():
            if rec.get("path") and (Path(rec["path"]) / MARKER).is_file():
                out[name] = Upstream(name, rec.get("fingerprint", ""), rec["path"])
        return out


def _inside(root: Path, relative: str, what: str) -> Path:
    root = root.resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"path '{relative}' leaves {what}")
    return path
