"""Source rows -> a role's columns: rename, map categorical values, convert types, check categories.

Every mistake is one line naming the dataset, the source column (and the role column it feeds) and the first row
at fault, as `<from>: column '<src>' (-> <role column>), <split> row <n>: <what>`; a value outside a role's
categories lists the closest allowed ones. Work is per batch of rows and vectorised with pyarrow compute: a
column's distinct values are mapped once, not per row.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np

from factory.errors import DataError
from factory.external.roles import Role


@dataclass(frozen=True)
class Mapping:
    """What the recipe asked: role column -> source column, value maps, constants."""

    label: str  # the dataset as written (`from:`)
    role: Role
    columns: dict[str, str]  # role column -> source column
    values: dict[str, dict[str, Any]]  # role column -> {source value (as text): role value}
    constants: dict[str, Any]  # role column -> one value for every row

    def output_columns(self) -> list[str]:
        given = set(self.columns) | set(self.constants) | set(self.role.defaults)
        return [c for c in self.role.columns if c in given]


@dataclass(frozen=True)
class Rows:
    """Where a batch's rows come from, for error messages and default ids: split name and position per row."""

    split: list[str]
    position: np.ndarray

    def name(self, i: int) -> str:
        return f"{self.split[i]} row {int(self.position[i])}"

    @property
    def first(self) -> int:
        return int(self.position[0]) if len(self.position) else 0

    def ids(self) -> list[str]:
        """'<split>-<row>' per row: a person id for sources that have none."""
        return [f"{s}-{int(p)}" for s, p in zip(self.split, self.position)]


def features(mapping: Mapping) -> Any:
    """The `datasets.Features` of the mapped rows (categorical people columns as ClassLabels)."""
    from datasets import ClassLabel, Features, List, Value

    out = {}
    for col in mapping.output_columns():
        kind = mapping.role.columns[col]
        if kind == "label":
            out[col] = ClassLabel(names=list(mapping.role.categories[col]))
        elif kind.startswith("list<"):
            out[col] = List(Value(kind[5:-1]))
        else:
            out[col] = Value(kind)
    return Features(out)


def check_source_columns(mapping: Mapping, available: list[str]) -> None:
    from factory.errors import did_you_mean

    for col, src in mapping.columns.items():
        if src not in available:
            raise DataError(
                f"{mapping.label}: no column '{src}' (mapped to {col}){did_you_mean(src, available)}; "
                f"it has {', '.join(available[:12])}{' ...' if len(available) > 12 else ''}"
            )


def apply(mapping: Mapping, table: Any, rows: Rows) -> Any:
    """The mapped batch as a `datasets.Dataset` with `features(mapping)`."""
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo

    feats = features(mapping)
    schema = feats.arrow_schema
    given = [c for c in feats if c in mapping.columns or c in mapping.constants]
    arrays = {col: _column(mapping, col, table, rows, schema.field(col).type) for col in given}
    for col in feats:  # defaults last: one may derive from mapped columns (a question's kind from its options)
        if col not in arrays:
            arrays[col] = _default(mapping.role.defaults[col], arrays, rows, schema.field(col).type)
    out = pa.table({c: arrays[c] for c in feats}).cast(schema)
    return Dataset(out, info=DatasetInfo(features=feats), fingerprint=f"mapped-{rows.first}")


def _default(value: Any, arrays: dict[str, Any], rows: Rows, target: Any) -> Any:
    import pyarrow as pa

    n = len(rows.position)
    if callable(value):
        return pa.array(value(arrays, rows), target)
    return pa.nulls(n, target) if value is None else pa.array([value] * n, target)


def _column(mapping: Mapping, col: str, table: Any, rows: Rows, target: Any) -> Any:
    import pyarrow as pa

    kind = mapping.role.columns[col]
    if col in mapping.columns:
        src = mapping.columns[col]
        where = f"{mapping.label}: column '{src}' (-> {col})"
        arr = table.column(src).combine_chunks()
        if col in mapping.values:
            arr = _map_values(arr, mapping.values[col])
    else:
        where = f"{mapping.label}: constants.{col}"
        arr = pa.array([mapping.constants[col]] * len(rows.position))
    arr = _convert(arr, kind, target, where, rows)
    if col in mapping.role.categories:
        arr = _categories(arr, mapping.role, col, where, rows)
    if col in mapping.role.required and arr.null_count:
        raise DataError(f"{where}, {rows.name(_first(arr.is_null()))}: no value (required)")
    return arr


def _map_values(arr: Any, table: dict[str, Any]) -> Any:
    """Replace each value by `table[str(value)]`; values not in the table stay as they are (as text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = arr.cast(pa.string()) if not pa.types.is_string(arr.type) else arr
    keys = pa.array(list(table), pa.string())
    hit = pc.index_in(text, value_set=keys)
    mapped = pa.array([None if v is None else str(v) for v in table.values()], pa.string())
    replaced = pc.take(mapped, hit.fill_null(0))
    is_hit = pc.is_valid(hit)
    nulled = pc.and_(is_hit, pc.is_null(replaced))  # a value mapped to null on purpose
    out = pc.if_else(is_hit, replaced, text)
    return pc.if_else(nulled, pa.scalar(None, pa.string()), out)


def _convert(arr: Any, kind: str, target: Any, where: str, rows: Rows) -> Any:
    """The values as the column's type; the first value that does not convert is named."""
    import pyarrow as pa

    if kind == "label":
        return arr if pa.types.is_string(arr.type) else arr.cast(pa.string())
    if kind.startswith("list<") and not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        first = _first(arr.is_valid())
        raise DataError(f"{where}, {rows.name(first)}: expected a list of {kind[5:-1]}, got {arr.type}")
    try:
        return arr.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    for i, value in enumerate(arr.to_pylist()):
        try:
            pa.array([value]).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise DataError(f"{where}, {rows.name(i)}: {value!r} is not {_type_name(kind)}") from None
    raise DataError(f"{where}: cannot convert {arr.type} to {_type_name(kind)}")


def _type_name(kind: str) -> str:
    return {"string": "text", "bool": "true or false"}.get(kind, f"an {kind}" if kind[0] in "aeiou" else f"a {kind}")


def _categories(arr: Any, role: Role, col: str, where: str, rows: Rows) -> Any:
    """Check every value is one of the column's categories; ClassLabel codes for label columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    allowed = role.categories[col]
    codes = pc.index_in(arr, value_set=pa.array(allowed, pa.string()))
    bad = pc.and_(pc.is_valid(arr), pc.is_null(codes))
    if pc.any(bad).as_py():
        i = _first(bad)
        value = arr[i].as_py()
        close = ", ".join(map(repr, closest(str(value), allowed)))
        raise DataError(
            f"{where}, {rows.name(i)}: '{value}' is not one of the {col} categories (closest: {close}; "
            f"map it under values.{col})"
        )
    return codes.cast(pa.int64()) if role.columns[col] == "label" else arr


def closest(value: str, allowed: list[str], n: int = 3) -> list[str]:
    """The allowed values nearest to `value`: those containing it (or contained in it) first, ignoring case, then
    by difflib's similarity."""
    low = value.casefold()
    by_name = {a.casefold(): a for a in allowed}
    ratio = {k: difflib.SequenceMatcher(None, low, k).ratio() for k in by_name}
    contains = [by_name[k] for k in sorted(by_name, key=lambda k: -ratio[k]) if low and (low in k or k in low)]
    similar = [by_name[k] for k in difflib.get_close_matches(low, list(by_name), n=n, cutoff=0.0)]
    return list(dict.fromkeys(contains + similar))[:n]


def _first(mask: Any) -> int:
    import pyarrow.compute as pc

    return int(pc.index(mask, True).as_py())
