"""Census API-format tables: the wide CSV (or JSON) the Census API returns, parsed generically.

A table file has one row per geography (`GEO_ID`, `state_fips`, `state_po`, `state_name`, ...) and one column per
variable: `<TABLE>_<ROW>E` estimates, `...M` margins of error, `...PE`/`...PM` percents (profile tables) and
`...EA`/`...MA` annotation strings. Negative sentinel codes are Census annotations, not numbers; they read as
missing, and `annotation()` says which one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from factory.errors import DataError

ANNOTATIONS = {
    -111111111: "too few sample observations for a median",
    -222222222: "margin of error not computable",
    -333333333: "median in an open-ended distribution",
    -555555555: "controlled estimate: no sampling error",
    -666666666: "cannot be computed (too few observations or a zero base)",
    -888888888: "not applicable",
    -999999999: "suppressed: too few sample cases",
}
GEO_COLUMNS = ("GEO_ID", "state_fips", "state_po", "state_name", "NAME", "state")
_VAR = re.compile(r"^(?P<table>[A-Z]+[0-9]+[A-Z]?)_(?:(?P<col>C[0-9]+)_)?(?P<row>[0-9]+)(?P<kind>E|M|PE|PM)$")


@dataclass
class ApiTable:
    """One Census table for many geographies: numeric values with sentinels turned into NaN."""

    name: str
    path: str
    values: pd.DataFrame  # index: geography key (state_po); columns: variable names (E, M, PE, PM)
    raw: pd.DataFrame  # the same, with sentinels kept
    geo: pd.DataFrame  # geography columns, same index
    labels: dict[str, str]

    def has(self, geo: str) -> bool:
        return geo in self.values.index

    def row(self, geo: str) -> pd.Series:
        if geo not in self.values.index:
            raise DataError(f"{self.path}: unknown geography '{geo}'")
        return self.values.loc[geo]

    def estimate(self, geo: str, var: str) -> float:
        if var not in self.values.columns:
            raise DataError(f"{self.path}: missing column '{var}'")
        return float(self.values.at[geo, var]) if self.has(geo) else self.row(geo)  # row() raises

    def estimates(self, geo: str, variables: list[str]) -> np.ndarray:
        missing = [v for v in variables if v not in self.values.columns]
        if missing:
            raise DataError(f"{self.path}: missing column '{missing[0]}'")
        return self.row(geo)[variables].to_numpy(dtype=np.float64)

    def annotation(self, geo: str, var: str) -> str | None:
        value = self.raw.at[geo, var]
        return ANNOTATIONS.get(int(value)) if pd.notna(value) and value < 0 else None

    def label(self, var: str) -> str:
        return self.labels.get(var, var)


def parse_variable(name: str) -> dict[str, str] | None:
    """`S1201_C02_004E` -> table S1201, column C02, row 004, kind E (estimate); None if not a variable."""
    m = _VAR.match(name)
    return m.groupdict() if m else None


def read_api_table(
    path: str | Path, name: str, labels: dict[str, str] | None = None, key: str = "state_po"
) -> ApiTable:
    """Read a wide API-format CSV (optionally gzipped). Errors name the file and the column."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such census file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    return table_from_frame(frame, str(path), name, labels or {}, key)


def table_from_frame(
    frame: pd.DataFrame, where: str, name: str, labels: dict[str, str], key: str = "state_po"
) -> ApiTable:
    if key not in frame.columns:
        raise DataError(f"{where}: missing column '{key}'")
    if frame[key].duplicated().any():
        raise DataError(f"{where}: geography '{frame[key][frame[key].duplicated()].iloc[0]}' appears twice")
    value_cols = [c for c in frame.columns if (p := parse_variable(c)) and p["table"] == name]
    if not value_cols:
        raise DataError(f"{where}: no {name}_... estimate columns (is this the {name} table?)")
    raw = frame[value_cols].apply(lambda s: pd.to_numeric(s.replace("", np.nan), errors="coerce"))
    bad = [
        c
        for c in value_cols
        if raw[c].isna().any()
        and (frame[c].str.strip() != "").any()
        and raw[c][frame[c].str.strip() != ""].isna().any()
    ]
    if bad:
        col = bad[0]
        cell = frame.loc[raw[col].isna() & (frame[col].str.strip() != ""), col].iloc[0]
        raise DataError(f"{where}: column '{col}': '{cell}' is not a number")
    raw.index = frame[key].to_numpy()
    codes = set(ANNOTATIONS)
    negative = raw < 0
    unknown = negative & ~raw.isin(codes)
    if unknown.to_numpy().any():
        col = unknown.any().idxmax()
        geo = unknown[col].idxmax()
        raise DataError(
            f"{where}: column '{col}', geography '{geo}': negative value {raw.at[geo, col]:g} "
            "is neither a count nor a Census annotation code"
        )
    values = raw.mask(negative)
    geo = frame[[c for c in GEO_COLUMNS if c in frame.columns]].copy()
    geo.index = raw.index
    return ApiTable(name, where, values, raw, geo, labels)


def api_json_to_frame(rows: list[list[str]]) -> pd.DataFrame:
    """The Census API's JSON answer (a header row, then one row per geography) as a frame of strings."""
    if not rows or not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise DataError("Census API answer: expected a JSON list of rows")
    header, *body = rows
    frame = pd.DataFrame(body, columns=header, dtype=str).fillna("")
    return frame
