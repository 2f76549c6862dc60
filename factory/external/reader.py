"""Which rows a stage reads (all of them, or a seeded sample) and reading them from a source's splits.

The splits are laid end to end: position p is row p of the first split, then of the next, and so on. A sample of
N rows is N positions drawn without replacement by `numpy.random.Generator.choice` from the stage seed, sorted:
only the row count is needed to draw it, and only the drawn rows are ever read, batch by batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from factory.errors import DataError
from factory.external.mapping import Rows
from factory.external.source import Part


def selection(label: str, total: int, sample: int | None, seed: int) -> np.ndarray:
    if sample is None:
        return np.arange(total, dtype=np.int64)
    if sample > total:
        raise DataError(f"{label}: sample {sample} is more than its {total} rows")
    picked = np.random.default_rng(seed).choice(total, size=sample, replace=False)
    return np.sort(picked).astype(np.int64)


def read(parts: list[Part], positions: np.ndarray, columns: list[str]) -> tuple[Any, Rows]:
    """The rows at these (sorted, global) positions, only `columns`, and where each came from."""
    import pyarrow as pa

    tables, splits, local = [], [], []
    start = 0
    for part in parts:
        stop = start + part.num_rows
        lo, hi = np.searchsorted(positions, [start, stop])
        if hi > lo:
            mine = positions[lo:hi] - start
            tables.append(part.take(mine, columns))
            splits += [part.split] * len(mine)
            local.append(mine)
        start = stop
    if not tables:
        empty = parts[0].take(np.zeros(0, dtype=np.int64), columns)
        return empty, Rows([], np.zeros(0, dtype=np.int64))
    return pa.concat_tables(tables, promote_options="permissive"), Rows(splits, np.concatenate(local))
