"""ACS 2018 1-year state tables (or a fetched folder in the same layout): the readers and the row layouts.

`table(name, root)` reads one table for all geographies through the generic API-format parser; `_Geo` looks up one
geography's variables. A folder is only read if its variable labels match `LABEL_CONTRACT` (Census renumbers
subject-table rows between vintages). What the rows mean as margins is in `acs2018_core` and `acs2018_blocks`.
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from factory.census.apiformat import ApiTable, read_api_table
from factory.errors import DataError
from factory.resources import data_path

TABLES = [
    "DP02",
    "DP03",
    "DP05",
    "S0101",
    "S0501",
    "S1201",
    "S1501",
    "S1601",
    "S1901",
    "S2101",
    "S2301",
    "S2401",
    "S2403",
    "S2701",
]
NAME = "ACS 2018 1-year"

# Detailed tables by race that a fetched folder may add (`factory census fetch` asks for them; the package ships
# none): sex by age (B01001A-I) and sex by education, 25+ (C15002A-I). Iterations A-G are the race-alone groups
# in vocab.RACE order, H White alone not Hispanic, I Hispanic or Latino.
RACE_ITERATIONS = "ABCDEFGHI"
DETAILED = [f"B01001{s}" for s in RACE_ITERATIONS] + [f"C15002{s}" for s in RACE_ITERATIONS]
DETAILED_CONTRACT = {  # checked when the table is read, as LABEL_CONTRACT is for the rest
    "B01001": {"_006E": "15 to 17 years", "_007E": "18 and 19 years", "_016E": "85 years and over", "_022E": "18 and"},
    "C15002": {"_003E": "Less than high school", "_006E": "Bachelor's degree or higher", "_011E": "Bachelor's"},
}

# Census category order -> vocabulary order, and the variable rows behind each category
OCC_ROWS = [4, 5, 7, 8, 9, 11, 12, 13, 14, 16, 17, 19, 21, 22, 23, 24, 25, 27, 28, 30, 31, 32, 34, 35, 36]
IND_ROWS = [3, 4, 5, 6, 7, 8, 10, 11, 12, 14, 15, 17, 18, 19, 21, 22, 24, 25, 26, 27]
S1201_MARITAL_COLS = {
    "Now married, except separated": 2,
    "Widowed": 3,
    "Divorced": 4,
    "Separated": 5,
    "Never married": 6,
}


# Label contract: a folder of API-format tables (another vintage fetched with `factory census fetch`) is only
# read if these variables mean what this module assumes; Census renumbers subject-table rows between vintages.
LABEL_CONTRACT = {
    "S0101_C03_005E": "15 to 19 years",
    "S0101_C03_021E": "15 to 17 years",
    "S0101_C01_022E": "Under 18 years",
    "S0101_C01_026E": "18 years and over",
    "S0101_C01_030E": "65 years and over",
    "S1201_C01_003E": "15 to 19 years",
    "S1201_C02_003E": "Now married",
    "S1201_C06_015E": "65 years and over",
    "S1501_C03_002E": "Less than high school graduate",
    "S1501_C03_013E": "Graduate or professional degree",
    "S1501_C03_016E": "25 to 34 years",
    "S1501_C03_031E": "White alone, not Hispanic",
    "S1501_C03_052E": "Hispanic",
    "S2301_C01_002E": "16 to 19 years",
    "S2301_C01_011E": "75 years and over",
    "S2301_C01_022E": "Male",
    "S2301_C01_035E": "Bachelor's degree or higher",
    "S2401_C02_004E": "Management occupations",
    "S2401_C02_036E": "Material moving occupations",
    "S2403_C02_003E": "Agriculture, forestry, fishing and hunting",
    "S2403_C02_027E": "Public administration",
    "S2701_C02_003E": "6 to 18 years",
    "S2701_C02_010E": "75 years and older",
    "S2701_C02_044E": "Employed",
    "S2101_C03_009E": "18 to 34 years",
    "S2101_C03_013E": "75 years and over",
    "S1601_C03_006E": "Spanish!!18 to 64 years old",
    "S1601_C05_019E": "Other languages!!65 years old and over",
    "S1901_C03_002E": "Less than $10,000",
    "S0501_C02_006E": "18 to 24 years",
    "DP02_0017E": "Population in households",
    "DP02_0057E": "College or graduate school",
    "DP02_0087E": "Native",
    "DP03_0047E": "Private wage and salary workers",
    "DP05_0071E": "Hispanic or Latino",
    "DP05_0083E": "Two or more races",
}


@lru_cache(maxsize=4)
def labels(root: str | None = None) -> dict[str, str]:
    if root is None:
        v = pd.read_parquet(data_path("census", "acs2018_1yr_state", "variables.parquet"))
    else:
        files = sorted(Path(root).glob("*variables*.csv"))
        if not files:
            raise DataError(f"{root}: no *variables*.csv file (variable labels) in the census folder")
        v = pd.read_csv(files[0], dtype=str, keep_default_na=False)
        for col in ("VARIABLE", "LABEL"):
            if col not in v.columns:
                raise DataError(f"{files[0]}: missing column '{col}'")
    out = dict(zip(v["VARIABLE"], v["LABEL"]))
    if root is not None:
        for var, expected in LABEL_CONTRACT.items():
            if expected not in out.get(var, ""):
                raise DataError(
                    f"{root}: variable {var} is labelled '{out.get(var, '(missing)')}', expected "
                    f"'...{expected}...' (a vintage with another table layout)"
                )
    return out


def _find(name: str, root: str) -> list[Path]:
    return sorted(Path(root).glob(f"*_{name}.csv*"))


@cache
def available(name: str, root: str | None = None) -> bool:
    """Whether the tables (shipped, or the folder `root`) include `name`; the detailed tables are optional."""
    if root is None:
        return name in TABLES
    return bool(_find(name, root))


@cache
def table(name: str, root: str | None = None) -> ApiTable:
    names = labels(root)  # first: a folder of another layout is refused before anything is read from it
    for var, expected in DETAILED_CONTRACT.get(name[:6], {}).items() if name in DETAILED else ():
        if expected not in names.get(name + var, ""):
            raise DataError(
                f"{root}: variable {name + var} is labelled '{names.get(name + var, '(missing)')}', expected "
                f"'...{expected}...' (a detailed table of another layout)"
            )
    if root is None:
        path = data_path("census", "acs2018_1yr_state", f"acs2018_1yr_state_{name}.csv.gz")
    else:
        found = _find(name, root)
        if not found:
            raise DataError(f"{root}: no table {name} (a file named *_{name}.csv)")
        path = found[0]
    return read_api_table(path, name, names)


def geographies(root: str | None = None) -> pd.DataFrame:
    t = table("S0101", root)
    return pd.DataFrame(
        {
            "geo": t.values.index,
            "geo_id": t.geo["GEO_ID"].to_numpy(),
            "name": t.geo["state_name"].to_numpy(),
            "fips": t.geo["state_fips"].to_numpy(),
        }
    )


class _Geo:
    """Variable lookups for one geography."""

    def __init__(self, geo: str, root: str | None = None):
        self.geo = geo
        self.root = root
        self.skipped: list[str] = []

    def table(self, tbl: str) -> ApiTable:
        return table(tbl, self.root)

    def e(self, tbl: str, var: str) -> float:
        return self.table(tbl).estimate(self.geo, var)

    def s(self, tbl: str, col: int, rows: list[int] | range) -> np.ndarray:
        return self.table(tbl).estimates(self.geo, [f"{tbl}_C{col:02d}_{r:03d}E" for r in rows])

    def dp(self, tbl: str, rows: list[int] | range) -> np.ndarray:
        return self.table(tbl).estimates(self.geo, [f"{tbl}_{r:04d}E" for r in rows])

    def b(self, tbl: str, rows: list[int] | range) -> np.ndarray:
        """Detailed-table estimates (`B01001A_007E`)."""
        return self.table(tbl).estimates(self.geo, [f"{tbl}_{r:03d}E" for r in rows])

    def has(self, *tables: str) -> bool:
        """Whether every one of `tables` is available and has this geography."""
        return all(available(t, self.root) and self.table(t).has(self.geo) for t in tables)
