"""Where a dataset comes from (`from:`) and reading its rows without loading it whole.

    hub://org/name@<revision>              a Hub dataset at a pinned revision (tag, commit or branch)
    hub+file://path/to/repo@<revision>     a folder repo the `folder` publish target wrote, at a tag
    data/people.parquet | .csv | .jsonl    a local file, or a folder of such files, or a `save_to_disk` folder

Local paths are taken from the recipe's folder and must stay inside the allowed roots: the recipe's folder, or a
folder listed in `FACTORY_DATA_ROOTS` (separated by the path separator); symbolic links are resolved first, so a
link cannot lead out. Their bytes enter the stage fingerprint (`DataFile` / `DataDir`); a Hub dataset is
fingerprinted by its repo and revision.

Reading never holds the dataset in memory: Hub and folder-repo datasets are loaded by `datasets.load_dataset`
into its memory-mapped Arrow cache, `save_to_disk` folders are memory-mapped by `load_from_disk`, and parquet,
CSV and JSON Lines files are scanned in record batches (`LocalFiles`). `Part.take` gathers only the rows
asked for (a seeded sample's positions, or one batch of them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory import hub_inputs
from factory.errors import DataError
from factory.options import DataDir, DataFile

FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}
ROOTS_ENV = "FACTORY_DATA_ROOTS"


class HubSource(str):
    """A `hub://` or `hub+file://` source as written; `ref` is the parsed reference."""

    ref: hub_inputs.HubRef

    def __new__(cls, written: str, ref: hub_inputs.HubRef) -> HubSource:
        obj = super().__new__(cls, written)
        obj.ref = ref
        return obj

    def __reduce__(self):  # keep the reference when pickled to another executor
        return (type(self), (str(self), self.ref))


Source = HubSource | DataFile  # DataDir is a DataFile


def allowed_roots(base_dir: Path) -> list[Path]:
    extra = [Path(p).expanduser().resolve() for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p]
    return [Path(base_dir).resolve(), *extra]


def inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def parse_source(text: str, base_dir: Path | str) -> Source:
    """A `from:` value as a typed source; ValueError with a one-line reason."""
    roots = allowed_roots(Path(base_dir))
    if hub_inputs.is_hub(text):
        if "@" in text and ":" in text.rpartition("@")[2]:
            raise ValueError(f"'{text}': name the config with `config:`, not after the revision")
        ref = hub_inputs.parse(text, base_dir)
        if ref.kind == "folder" and not inside(Path(ref.repo), roots):
            raise ValueError(f"'{text}': {ref.repo} is outside the recipe's folder and {ROOTS_ENV}")
        return HubSource(text, ref)
    if "://" in text:
        raise ValueError(f"'{text}': not a dataset source (hub://org/name@rev, hub+file://path@rev or a path)")
    path = Path(text).expanduser()
    resolved = (path if path.is_absolute() else Path(base_dir) / path).resolve()
    if not inside(resolved, roots):
        raise ValueError(f"'{text}' resolves outside the recipe's folder (allowed: it, or a folder in {ROOTS_ENV})")
    if resolved.is_dir():
        escaping = [p for p in resolved.rglob("*") if not inside(p.resolve(), roots)]
        if escaping:
            raise ValueError(f"'{text}': {escaping[0].relative_to(resolved)} links outside the allowed folders")
        return DataDir(text, resolved)
    if resolved.is_file():
        if resolved.suffix.lower() not in FORMATS:
            raise ValueError(f"'{text}': unknown format '{resolved.suffix}' (parquet, csv, jsonl or a folder)")
        return DataFile(text, resolved)
    raise ValueError(f"file not found: {text}")


def signature(source: Source) -> tuple:
    """A local source's files with their sizes and modification times (empty for a Hub source)."""
    if isinstance(source, HubSource):
        return ()
    path = source.resolved
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file())


# --- reading ----------------------------------------------------------------------------------------------------


@dataclass
class Part:
    """One split of a source: its rows, readable by position."""

    split: str
    table: Any  # LocalFiles (scanned in batches) or a memory-mapped pyarrow.Table (datasets' Arrow files)
    num_rows: int

    @property
    def columns(self) -> list[str]:
        return list(self.table.schema.names)

    def take(self, positions: Any, columns: list[str]) -> Any:
        """The rows at these positions (sorted), only these columns, as a pyarrow Table."""
        import pyarrow as pa

        if isinstance(self.table, LocalFiles):
            return _gather(self.table, positions, columns)
        return self.table.select(columns).take(pa.array(positions, type=pa.int64()))


SCAN_BATCH = 8_192  # rows per record batch scanned: with a 1 MiB read buffer, what a scan holds at once


@dataclass
class LocalFiles:
    """Parquet, CSV or JSON Lines files of one schema, read in order, batch by batch. Parquet goes through
    `ParquetFile.iter_batches` with a buffered stream (a whole row group is never decoded at once, which costs
    several times its size); CSV and JSON Lines through `pyarrow.dataset`."""

    files: list[Path]
    format: str
    schema: Any

    @classmethod
    def open(cls, files: list[Path], format: str) -> LocalFiles:
        import pyarrow.dataset as pds

        return cls(files, format, pds.dataset([str(p) for p in files], format=format).schema)

    def count(self) -> int:
        import pyarrow.dataset as pds
        import pyarrow.parquet as pq

        if self.format == "parquet":
            return sum(pq.ParquetFile(p).metadata.num_rows for p in self.files)
        return pds.dataset([str(p) for p in self.files], format=self.format, schema=self.schema).count_rows()

    def batches(self, columns: list[str]) -> Iterator[Any]:
        import pyarrow.dataset as pds
        import pyarrow.parquet as pq

        for path in self.files:
            if self.format == "parquet":
                reader = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
                yield from reader.iter_batches(batch_size=SCAN_BATCH, columns=columns, use_threads=False)
            else:
                part = pds.dataset(str(path), format=self.format, schema=self.schema)
                yield from part.to_batches(columns=columns, batch_size=SCAN_BATCH, batch_readahead=1)


def _gather(files: LocalFiles, positions: Any, columns: list[str]) -> Any:
    """The rows at these sorted positions, keeping only them from each batch as the scan passes."""
    import numpy as np
    import pyarrow as pa

    kept, start = [], 0
    for batch in files.batches(columns):
        stop = start + batch.num_rows
        lo, hi = np.searchsorted(positions, [start, stop])
        if hi > lo:
            kept.append(pa.Table.from_batches([batch]).take(pa.array(positions[lo:hi] - start, type=pa.int64())))
        start = stop
        if hi >= len(positions):
            break
    schema = pa.schema([files.schema.field(c) for c in columns])
    return pa.concat_tables(kept).cast(schema) if kept else schema.empty_table()


def open_parts(source: Source, splits: list[str] | None, config: str | None, cache_dir: Path | None) -> list[Part]:
    """The source's splits (in the order asked), ready to read."""
    if isinstance(source, HubSource):
        return _hub_parts(source, splits, config, cache_dir)
    if config is not None:
        raise DataError(f"{source}: `config` applies to Hub datasets only")
    path = source.resolved
    if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        return _saved_parts(source, splits)
    if splits:
        raise DataError(f"{source}: `split` applies to Hub datasets and save_to_disk dataset dicts, not plain files")
    return [Part("train", *_scan(source))]


def _scan(source: DataFile) -> tuple[LocalFiles, int]:
    path = source.resolved
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in FORMATS) if path.is_dir() else [path]
    kinds = {FORMATS[p.suffix.lower()] for p in files}
    if len(kinds) != 1:
        found = ", ".join(sorted(kinds)) or "no parquet, csv or jsonl file"
        raise DataError(f"{source}: a folder source holds files of one format (found {found})")
    try:
        table = LocalFiles.open(files, kinds.pop())
        return table, table.count()
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError...: one line naming the file
        raise DataError(f"{source}: cannot read: {_first_line(exc)}") from None


def _saved_parts(source: DataFile, splits: list[str] | None) -> list[Part]:
    import datasets

    loaded = datasets.load_from_disk(str(source.resolved))
    if isinstance(loaded, datasets.Dataset):
        if splits:
            raise DataError(f"{source}: a single saved dataset has no splits; leave `split` out")
        return [_arrow_part("train", loaded)]
    return [_arrow_part(s, loaded[s]) for s in _chosen(source, list(loaded), splits)]


def _chosen(source: str, available: list[str], splits: list[str] | None) -> list[str]:
    from factory.errors import did_you_mean

    for s in splits or []:
        if s not in available:
            raise DataError(f"{source}: no split '{s}'{did_you_mean(s, available)} (splits: {', '.join(available)})")
    return list(splits or available)


def _arrow_part(split: str, dataset: Any) -> Part:
    return Part(split, dataset.data.table, len(dataset))


def _hub_parts(source: HubSource, splits: list[str] | None, config: str | None, cache_dir: Path | None) -> list[Part]:
    import datasets

    ref = source.ref
    scratch = Path(cache_dir or ".") / "datasets"
    if ref.kind == "folder":
        where, kwargs = _export(ref, scratch), {}
    else:
        where, kwargs = ref.repo, {"revision": ref.revision}
    try:
        with _quiet():
            loaded = datasets.load_dataset(where, config, cache_dir=str(scratch / "hf"), **kwargs)
    except Exception as exc:  # datasets and huggingface_hub raise many kinds; the user needs one line
        raise DataError(f"{source}: {hub_error(exc, ref)}") from None
    return [_arrow_part(s, loaded[s]) for s in _chosen(source, list(loaded), splits)]


@contextmanager
def _quiet():
    """The clients' retry warnings and progress bars off: a failure is reported once, as one line."""
    import datasets
    from huggingface_hub.utils import logging as hub_logging

    modules = (datasets.utils.logging, hub_logging)
    levels = [m.get_verbosity() for m in modules]
    bars_were_off = datasets.are_progress_bars_disabled()
    for module in modules:
        module.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        for module, level in zip(modules, levels):
            module.set_verbosity(level)
        if not bars_were_off:
            datasets.enable_progress_bars()


def _export(ref: hub_inputs.HubRef, scratch: Path) -> str:
    """The folder repo's files at the pinned commit, exported once."""
    commit = hub_inputs.folder_commit(ref.repo, ref.revision)
    dest = scratch / "folders" / commit
    if not (dest / ".complete").is_file():
        import shutil

        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        hub_inputs.export(ref, dest)
        (dest / ".complete").write_text(commit + "\n")
    return str(dest)


def hub_error(exc: BaseException, ref: hub_inputs.HubRef) -> str:
    """One line for why a Hub dataset could not be loaded: no such revision or repo, no network, or the cause."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub import constants, errors

    chain = _causes(exc)
    if any(isinstance(e, errors.RevisionNotFoundError) for e in chain):
        return f"revision '{ref.revision}' does not exist"
    if any(isinstance(e, (errors.RepositoryNotFoundError, DatasetNotFoundError)) for e in chain):
        return f"no dataset '{ref.repo}' on {constants.ENDPOINT} (or it is private: set HF_TOKEN)"
    unreachable = [e for e in chain if isinstance(e, (OSError, errors.OfflineModeIsEnabled)) or _network(e)]
    if unreachable:
        return f"cannot reach {constants.ENDPOINT} (no network?): {_first_line(unreachable[-1])}"
    return f"cannot load: {_first_line(exc)}"


def _causes(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _network(exc: BaseException) -> bool:
    import httpx

    return isinstance(exc, (httpx.ConnectError, httpx.TimeoutException, httpx.NetworkError))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
