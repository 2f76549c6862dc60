"""ACS 2018 1-year state tables (51 geographies, 16 tables) -> the margins of one geography.

Every table is read through the generic API-format parser; suppressed cells (Census code -999999999) drop the
margin that needs them and the manifest says so. Where the census gives rates or percents (S1201, S2301, S0501)
counts are rate x universe. Priors (seeds) encode what no table says but common sense does: who can be a spouse,
at what ages people live with their parents or in group quarters, which language goes with which origin. They are
priors only: IPF moves them to every table that exists.
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from factory.census import vocab
from factory.census.apiformat import ApiTable, read_api_table
from factory.census.ipf import Margin
from factory.census.model import Block, GeoSpec
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


@cache
def table(name: str, root: str | None = None) -> ApiTable:
    names = labels(root)  # first: a folder of another layout is refused before anything is read from it
    if root is None:
        path = data_path("census", "acs2018_1yr_state", f"acs2018_1yr_state_{name}.csv.gz")
    else:
        found = sorted(Path(root).glob(f"*_{name}.csv*"))
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


def population(geo: str, min_age: int = 18, max_age: int = vocab.MAX_AGE, root: str | None = None) -> float:
    """Persons in the age universe (S0101), for splitting a total in proportion to population."""
    from factory.census.model import GeoSpec, universe_factor

    g = _Geo(geo, root)
    ages = core_margins_age(g)
    probe = GeoSpec(geo, "", "", 0.0, [], [], min_age=min_age, max_age=max_age)
    return float((ages.sum(axis=1) * universe_factor(probe)).sum())


def core_margins_age(g: _Geo) -> np.ndarray:
    male, female = g.s("S0101", 3, range(5, 20)), g.s("S0101", 5, range(5, 20))  # 15-19 ... 85+
    m1517, f1517 = g.e("S0101", "S0101_C03_021E"), g.e("S0101", "S0101_C05_021E")
    return np.stack([np.r_[male[0] - m1517, male[1:]], np.r_[female[0] - f1517, female[1:]]], axis=1)


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


def ident(dim: str) -> np.ndarray:
    return np.arange(len(vocab.CORE_DIMS[dim]))


def age_map(groups: list[tuple[int, int]]) -> np.ndarray:
    return vocab.band_map(groups)


EDU4 = np.array([0, 0, 1, 2, 2, 3, 3])  # <HS, HS, some college/associate, BA+
EDU3 = np.array([0, 0, 1, 1, 1, 2, 2])  # <HS, HS..associate, BA+
EDU5 = np.array([0, 0, 1, 2, 2, 3, 4])  # <HS, HS, some college/associate, bachelor's, graduate


def _emp_from_rates(
    pop: np.ndarray, lfpr: np.ndarray, epr: np.ndarray, ur: np.ndarray, no_armed: np.ndarray | None = None
) -> np.ndarray:
    """S2301 rates -> counts of employed, unemployed, armed forces, not in labor force.

    Armed Forces = labor force - civilian labor force, a difference of rounded rates: where it cannot be
    (`no_armed`, the 65+) the rounding residue goes to 'not in labor force'."""
    employed = pop * epr / 100
    civ_lf = employed / np.maximum(1 - ur / 100, 1e-9)
    unemployed = civ_lf - employed
    lf = pop * lfpr / 100
    armed = np.maximum(lf - civ_lf, 0)
    if no_armed is not None:
        armed = np.where(no_armed, 0.0, armed)
    nilf = np.maximum(pop - employed - unemployed - armed, 0)
    return np.stack([employed, unemployed, armed, nilf], axis=-1)


def core_margins(g: _Geo) -> list[Margin]:
    out: list[Margin] = []
    # age x sex (S0101): the one count margin; 18-19 = 15-19 minus 15-17
    ages = core_margins_age(g)
    out.append(
        Margin(
            "S0101 age x sex",
            ("age_band", "sex"),
            {"age_band": ident("age_band"), "sex": ident("sex")},
            ages,
            mode="count",
        )
    )

    # race/ethnicity of the 16+ (S2301 population rows; "race alone" includes Hispanics, so the non-Hispanic part
    # is taken in the state's DP05 ratio); suppressed rows fall back to DP05 shares of all ages
    alone16 = g.s("S2301", 1, range(12, 19))  # White, Black, AIAN, Asian, NHPI, SOR, Two+
    hisp16, wnh16 = g.e("S2301", "S2301_C01_019E"), g.e("S2301", "S2301_C01_020E")
    dp_alone = g.dp("DP05", [37, 38, 39, 44, 52, 57, 35])
    dp_nh = g.dp("DP05", range(77, 84))
    ratio = np.divide(dp_nh, dp_alone, out=np.zeros(7), where=dp_alone > 0)
    nh16 = alone16 * ratio
    nh16[0] = wnh16
    dp_share = np.r_[g.e("DP05", "DP05_0071E"), dp_nh]
    race = np.r_[hisp16, nh16]
    if np.isnan(race).any() or race.sum() <= 0:
        g.skipped.append("S2301 race of the 16+ (suppressed cells): DP05 all-ages race shares used instead")
        race = dp_share
    out.append(
        Margin(
            "S2301/DP05 race and Hispanic origin (16+)",
            ("race_ethnicity",),
            {"race_ethnicity": ident("race_ethnicity")},
            race,
        )
    )

    # education (S1501): 18-24 by sex (4 levels), 25+ by sex (7), 25+ age bands by sex (3), race by sex (3, 25+)
    e1824 = np.stack([g.s("S1501", c, range(2, 6)) for c in (3, 5)])[None]
    out.append(
        Margin(
            "S1501 education x sex (18-24)",
            ("age_band", "sex", "education"),
            {"age_band": age_map([(18, 24)]), "sex": ident("sex"), "education": EDU4},
            e1824,
            given=("age_band", "sex"),
        )
    )
    e25 = np.stack([g.s("S1501", c, range(7, 14)) for c in (3, 5)])[None]
    out.append(
        Margin(
            "S1501 education x sex (25+)",
            ("age_band", "sex", "education"),
            {"age_band": age_map([(25, 99)]), "sex": ident("sex"), "education": ident("education")},
            e25,
            given=("age_band", "sex"),
        )
    )
    bands = []
    for row in (16, 19, 22, 25):
        per_sex = []
        for c in (3, 5):
            pop, hs, ba = g.s("S1501", c, [row, row + 1, row + 2])
            per_sex.append([pop - hs, hs - ba, ba])
        bands.append(per_sex)
    out.append(
        Margin(
            "S1501 education x age x sex (25+)",
            ("age_band", "sex", "education"),
            {"age_band": age_map([(25, 34), (35, 44), (45, 64), (65, 99)]), "sex": ident("sex"), "education": EDU3},
            np.array(bands),
            given=("age_band", "sex"),
        )
    )
    race_edu = []
    for row in (31, 52):  # White alone not Hispanic, Hispanic
        per_sex = []
        for c in (3, 5):
            pop, hs, ba = g.s("S1501", c, [row, row + 1, row + 2])
            per_sex.append([pop - hs, hs - ba, ba])
        race_edu.append(per_sex)
    race_edu = np.array(race_edu)
    if np.isnan(race_edu).any():
        g.skipped.append("S1501 education x race (suppressed cells)")
    else:
        rmap = np.full(8, -1)
        rmap[1], rmap[0] = 0, 1  # White (non-Hispanic) -> 0, Hispanic -> 1
        out.append(
            Margin(
                "S1501 education x race x sex (25+; White non-Hispanic, Hispanic)",
                ("age_band", "race_ethnicity", "sex", "education"),
                {"age_band": age_map([(25, 99)]), "race_ethnicity": rmap, "sex": ident("sex"), "education": EDU3},
                race_edu[None],
                given=("age_band", "race_ethnicity", "sex"),
            )
        )

    # marital status x age x sex (S1201 row percents x band totals); 15-19 shares stand for 18-19
    groups = [(15, 19), (20, 34), (35, 44), (45, 54), (55, 64), (65, 99)]
    tab = np.zeros((len(groups), 2, len(vocab.MARITAL)))
    for s, first in enumerate((3, 10)):
        rows = list(range(first, first + 6))
        total = g.s("S1201", 1, rows)
        for status, col in S1201_MARITAL_COLS.items():
            tab[:, s, vocab.MARITAL.index(status)] = total * g.s("S1201", col, rows) / 100
    out.append(
        Margin(
            "S1201 marital status x age x sex",
            ("age_band", "sex", "marital_status"),
            {"age_band": age_map(groups), "sex": ident("sex"), "marital_status": ident("marital_status")},
            tab,
            given=("age_band", "sex"),
        )
    )

    # employment (S2301 rates x populations): by age; by sex (20-64); by education (25-64)
    rows = list(range(2, 12))
    emp_age = _emp_from_rates(
        *(g.s("S2301", c, rows) for c in (1, 2, 3, 4)), no_armed=np.array([False] * 8 + [True, True])
    )
    agroups = [(16, 19), (20, 24), (25, 29), (30, 34), (35, 44), (45, 54), (55, 59), (60, 64), (65, 74), (75, 99)]
    out.append(
        Margin(
            "S2301 employment x age",
            ("age_band", "employment_status"),
            {"age_band": age_map(agroups), "employment_status": ident("employment_status")},
            emp_age,
            given=("age_band",),
        )
    )
    emp_sex = _emp_from_rates(*(g.s("S2301", c, [22, 23]) for c in (1, 2, 3, 4)))
    out.append(
        Margin(
            "S2301 employment x sex (20-64)",
            ("age_band", "sex", "employment_status"),
            {"age_band": age_map([(20, 64)]), "sex": ident("sex"), "employment_status": ident("employment_status")},
            emp_sex[None],
            given=("age_band", "sex"),
        )
    )
    emp_edu = _emp_from_rates(*(g.s("S2301", c, range(32, 36)) for c in (1, 2, 3, 4)))
    out.append(
        Margin(
            "S2301 employment x education (25-64)",
            ("age_band", "education", "employment_status"),
            {"age_band": age_map([(25, 64)]), "education": EDU4, "employment_status": ident("employment_status")},
            emp_edu[None],
            given=("age_band", "education"),
        )
    )

    # nativity: S0501 crosses where the state has them, else DP02's one-way shares of all ages
    if g.geo in g.table("S0501").values.index and not np.isnan(g.s("S0501", 2, [1])).any():
        cols = (2, 4, 5)  # native, naturalized, not a citizen
        totals = np.array([g.e("S0501", f"S0501_C{c:02d}_001E") for c in cols])

        def cross(universe_row: int, rows: list[int]) -> np.ndarray:
            base = (
                np.array([g.e("S0501", f"S0501_C{c:02d}_{universe_row:03d}E") for c in cols])
                if universe_row != 1
                else totals
            )
            return np.stack([base[i] * g.s("S0501", c, rows) / 100 for i, c in enumerate(cols)], axis=-1)

        nat_age = cross(1, list(range(6, 13)))
        out.append(
            Margin(
                "S0501 nativity x age",
                ("age_band", "nativity"),
                {
                    "age_band": age_map([(18, 24), (25, 44), (45, 54), (55, 64), (65, 74), (75, 84), (85, 99)]),
                    "nativity": ident("nativity"),
                },
                nat_age,
                given=("age_band",),
            )
        )
        out.append(
            Margin(
                "S0501 nativity x marital status (15+)",
                ("marital_status", "nativity"),
                {"marital_status": np.array([0, 1, 2, 3, 2]), "nativity": ident("nativity")},
                cross(28, [29, 30, 31, 32]),
                given=("marital_status",),
            )
        )
        out.append(
            Margin(
                "S0501 nativity x education (25+)",
                ("age_band", "education", "nativity"),
                {"age_band": age_map([(25, 99)]), "education": EDU5, "nativity": ident("nativity")},
                cross(38, list(range(39, 44)))[None],
                given=("age_band", "education"),
            )
        )
        emp = cross(48, [51, 52, 54, 55])
        out.append(
            Margin(
                "S0501 nativity x employment (16+)",
                ("employment_status", "nativity"),
                {"employment_status": ident("employment_status"), "nativity": ident("nativity")},
                emp,
                given=("employment_status",),
            )
        )
    else:
        g.skipped.append("S0501 nativity crosses (not published for this state): DP02 nativity shares of all ages")
        native = g.e("DP02", "DP02_0087E")
        out.append(
            Margin(
                "DP02 nativity and citizenship (all ages)",
                ("nativity",),
                {"nativity": ident("nativity")},
                np.array([native, g.e("DP02", "DP02_0094E"), g.e("DP02", "DP02_0095E")]),
            )
        )
    return out


def core_seed() -> np.ndarray:
    """Structural prior for what the 18-24 education table pools: no bachelor's or graduate degree at 18-19;
    graduate degrees rare at 20-24 (22-24 only); an associate's degree rare at 18-19 and uncommon at 20-24 next to
    "some college" (most of that group is still enrolled); "less than 9th grade" rare among the young next to
    "9th to 12th grade, no diploma". The tables then set the levels; these ratios only split pooled categories."""
    sizes = [len(v) for v in vocab.CORE_DIMS.values()]
    seed = np.ones(sizes)
    edu = vocab.EDUCATION
    seed[0, :, :, edu.index("Bachelor's degree")] = 0
    seed[0, :, :, edu.index("Graduate or professional degree")] = 0
    seed[1, :, :, edu.index("Graduate or professional degree")] = 0.1
    seed[0, :, :, edu.index("Associate's degree")] = 0.05
    seed[1, :, :, edu.index("Associate's degree")] = 0.3
    seed[:2, :, :, edu.index("Less than 9th grade")] = 0.2
    emp = vocab.EMPLOYMENT.index("Armed Forces")
    seed[vocab.AGE.index("65-69") :, :, :, :, :, emp] = 0  # no active-duty service members past 65
    return seed


def blocks(g: _Geo) -> tuple[list[Block], dict[str, list[tuple[int, int]]]]:
    out: list[Block] = []
    derived: dict[str, list[tuple[int, int]]] = {}
    employed = np.array([0, -1, -1, -1])  # employment map: the civilian employed only
    none_first = lambda cats: [vocab.NONE, *cats]  # noqa: E731

    # occupation | sex, employment (S2401); industry | sex, employment (S2403)
    for name, tbl, rows, cats in (
        ("occupation", "S2401", OCC_ROWS, vocab.OCCUPATION),
        ("industry", "S2403", IND_ROWS, vocab.INDUSTRY),
    ):
        tab = np.stack([g.s(tbl, 2, rows), g.s(tbl, 4, rows)])
        seed = np.zeros((2, 4, len(cats) + 1))
        seed[:, 0, 1:] = 1  # employed: a category, never None
        seed[:, 1:, 0] = 1  # everyone else: None
        out.append(
            Block(
                name,
                none_first(cats),
                ["sex", "employment_status"],
                [
                    Margin(
                        f"{tbl} {name} x sex",
                        ("sex", "employment_status", name),
                        {"sex": ident("sex"), "employment_status": employed, name: np.arange(len(cats) + 1) - 1},
                        tab[:, None, :],
                        given=("sex", "employment_status"),
                    )
                ],
                seed,
                note=f"{tbl} crosses {name} with sex only",
            )
        )

    # class of worker | employment, industry (DP03 one-way; public administration is government work)
    cls = g.dp("DP03", range(47, 51))
    seed = np.zeros((4, len(vocab.INDUSTRY) + 1, 5))
    seed[0, 1:, 1:] = 1
    seed[0, 1 + vocab.INDUSTRY.index("Public administration"), 1:] = [0, 1, 0, 0]
    seed[1:, 0, 0] = 1
    out.append(
        Block(
            "class_of_worker",
            none_first(vocab.CLASS_OF_WORKER),
            ["employment_status", "industry"],
            [
                Margin(
                    "DP03 class of worker",
                    ("employment_status", "class_of_worker"),
                    {"employment_status": employed, "class_of_worker": np.arange(5) - 1},
                    cls[None],
                    given=("employment_status",),
                )
            ],
            seed,
            note="no class x industry table: DP03 shares, with public administration structurally government",
        )
    )

    # health insurance | age group (S2701 bands), sex, employment; Armed Forces are covered (TRICARE)
    derived["age_s2701"] = [(18, 18), (19, 25), (26, 34), (35, 44), (45, 54), (55, 64), (65, 74), (75, 99)]
    ins_age = np.stack([g.s("S2701", c, [3, 4, 5, 6, 7, 8, 9, 10]) for c in (2, 4)], axis=-1)
    ins_emp = np.stack([g.s("S2701", c, [44, 45, 46]) for c in (2, 4)], axis=-1)
    civilian = np.array([0, 1, -1, 2])
    seed = np.ones((8, 2, 4, 2))
    seed[:, :, 2, 1] = 0
    out.append(
        Block(
            "health_insurance",
            list(vocab.HEALTH_INSURANCE),
            ["age_s2701", "sex", "employment_status"],
            [
                Margin(
                    "S2701 insurance x age",
                    ("age_s2701", "employment_status", "health_insurance"),
                    {
                        "age_s2701": np.arange(8),
                        "employment_status": np.array([0, 0, -1, 0]),
                        "health_insurance": np.arange(2),
                    },
                    ins_age[:, None, :],
                    given=("age_s2701", "employment_status"),
                ),
                Margin(
                    "S2701 insurance x employment (19-64)",
                    ("age_s2701", "employment_status", "health_insurance"),
                    {
                        "age_s2701": np.array([-1, 0, 0, 0, 0, 0, -1, -1]),
                        "employment_status": civilian,
                        "health_insurance": np.arange(2),
                    },
                    ins_emp[None],
                    given=("age_s2701", "employment_status"),
                ),
            ],
            seed,
            note="S2701 crosses insurance with age and with employment (its sex split covers all ages, children "
            "included, so it is left out)",
        )
    )

    # veteran | age band, sex, employment (S2101: civilians 18+; active duty are not counted as veterans)
    vet_age = np.stack([g.s("S2101", c, range(9, 14)) for c in (3, 5)], axis=-1)
    vet_sex = np.stack([g.s("S2101", c, [7, 8]) for c in (3, 5)], axis=-1)
    seed = np.ones((len(vocab.AGE), 2, 4, 2))
    seed[:, :, 2, 0] = 0
    civ = np.array([0, 0, -1, 0])
    out.append(
        Block(
            "veteran",
            list(vocab.VETERAN),
            ["age_band", "sex", "employment_status"],
            [
                Margin(
                    "S2101 veteran x age",
                    ("age_band", "employment_status", "veteran"),
                    {
                        "age_band": age_map([(18, 34), (35, 54), (55, 64), (65, 74), (75, 99)]),
                        "employment_status": civ,
                        "veteran": np.arange(2),
                    },
                    vet_age[:, None, :],
                    given=("age_band", "employment_status"),
                ),
                Margin(
                    "S2101 veteran x sex",
                    ("sex", "employment_status", "veteran"),
                    {"sex": ident("sex"), "employment_status": civ, "veteran": np.arange(2)},
                    vet_sex[:, None, :],
                    given=("sex", "employment_status"),
                ),
            ],
            seed,
            note="S2101 crosses veteran status with age and with sex, not both",
        )
    )

    # language x English ability | age band, race/ethnicity, nativity (S1601 by age; S0501 by nativity)
    lang_cats = ["English only"] + [
        f"{lang} | {ability}" for lang in vocab.LANGUAGE[1:] for ability in vocab.ENGLISH[1:]
    ]
    lang_rows = {
        "Spanish": (6, 7),
        "Other Indo-European languages": (10, 11),
        "Asian and Pacific Island languages": (14, 15),
        "Other languages": (18, 19),
    }
    tab = np.zeros((2, len(lang_cats)))
    for i, (r1864, r65) in enumerate(lang_rows.values()):
        tab[:, 1 + 2 * i] = g.s("S1601", 3, [r1864, r65])
        tab[:, 2 + 2 * i] = g.s("S1601", 5, [r1864, r65])
    adults = np.array(
        [g.e("S0101", "S0101_C01_026E") - g.e("S0101", "S0101_C01_030E"), g.e("S0101", "S0101_C01_030E")]
    )  # 18+ minus 65+, 65+
    tab[:, 0] = np.maximum(adults - tab[:, 1:].sum(axis=1), 0)
    margins = [
        Margin(
            "S1601 language x English ability x age",
            ("age_band", "language"),
            {"age_band": age_map([(18, 64), (65, 99)]), "language": np.arange(len(lang_cats))},
            tab,
            given=("age_band",),
        )
    ]
    seed = np.ones((len(vocab.AGE), 8, 3, len(lang_cats)))
    hispanic, asian, nhpi = (
        0,
        vocab.RACE_ETHNICITY.index("Asian"),
        vocab.RACE_ETHNICITY.index("Native Hawaiian and Other Pacific Islander"),
    )
    races = np.arange(8)
    seed[:, races != hispanic, :, 1:3] = 0.05  # Spanish (both English abilities)
    seed[:, (races != asian) & (races != nhpi), :, 5:7] = 0.05  # Asian and Pacific Island languages
    seed *= language_by_nativity(g, lang_cats)[None, None]
    out.append(
        Block(
            "language",
            lang_cats,
            ["age_band", "race_ethnicity", "nativity"],
            margins,
            seed,
            note="S1601 by age; prior: S0501 language by nativity (5+, so only a prior), Spanish mostly "
            "among Hispanic people, Asian and Pacific Island languages mostly among Asian and "
            "Pacific Islander people",
        )
    )

    # relationship | age band, sex, marital status (DP02 counts of people in households by relationship;
    # minors are taken out as 87% children, 11% other relatives, 2% nonrelatives of the householder)
    hh = g.dp("DP02", range(17, 24))  # in households, householder, spouse, child, other rel, nonrel, partner
    minors = g.e("S0101", "S0101_C01_022E")
    total = g.e("DP05", "DP05_0001E")
    gq = max(total - hh[0], 0)
    rel = np.array(
        [
            hh[1],
            hh[2],
            hh[6],
            max(hh[3] - 0.87 * minors, 0),
            max(hh[4] - 0.11 * minors, 0),
            max(hh[5] - hh[6] - 0.02 * minors, 0),
            gq,
        ]
    )
    married = vocab.MARITAL.index("Now married, except separated")
    heads = np.array([g.e("DP02", "DP02_0004E"), hh[1] - g.e("DP02", "DP02_0004E")])
    out.append(
        Block(
            "relationship",
            list(vocab.RELATIONSHIP),
            ["age_band", "sex", "marital_status"],
            [
                Margin(
                    "DP02 relationship to householder (adults, minors removed)",
                    ("relationship",),
                    {"relationship": np.arange(7)},
                    rel,
                ),
                Margin(
                    "DP02 householders by married-couple household",
                    ("marital_status", "relationship"),
                    {
                        "marital_status": np.where(np.arange(5) == married, 0, 1),
                        "relationship": np.array([0, -1, -1, -1, -1, -1, -1]),
                    },
                    heads[:, None],
                    given=("relationship",),
                ),
            ],
            relationship_seed(),
            note="no relationship x age table; prior by age and marital status, matched to DP02 counts",
        )
    )

    # household type | sex, marital status, relationship (DP02 household counts for householders)
    types = np.array(
        [
            g.e("DP02", "DP02_0004E"),
            g.e("DP02", "DP02_0006E"),
            g.e("DP02", "DP02_0008E"),
            g.e("DP02", "DP02_0011E"),
            g.e("DP02", "DP02_0010E") - g.e("DP02", "DP02_0011E"),
        ]
    )
    out.append(
        Block(
            "household_type",
            list(vocab.HOUSEHOLD_TYPE),
            ["sex", "marital_status", "relationship"],
            [
                Margin(
                    "DP02 household type (householders)",
                    ("relationship", "household_type"),
                    {
                        "relationship": np.array([0, -1, -1, -1, -1, -1, -1]),
                        "household_type": np.array([0, 1, 2, 3, 4, -1]),
                    },
                    types[None],
                    given=("relationship",),
                )
            ],
            household_type_seed(types),
            note="DP02 household counts fix householders; other members follow their householder's family type",
        )
    )

    # household income | household type, relationship (S1901 brackets by household type; persons in group
    # quarters have no household income)
    s1901 = {c: g.e("S1901", f"S1901_C{c:02d}_001E") * g.s("S1901", c, range(2, 12)) / 100 for c in (2, 3, 4)}
    by_type = np.stack([s1901[3], np.maximum(s1901[2] - s1901[3], 0), s1901[4]])
    inc_cats = [*vocab.HOUSEHOLD_INCOME, vocab.NONE]
    type_group = np.array([0, 1, 1, 2, 2, -1])
    seed = np.ones((6, 7, len(inc_cats)))
    seed[:, :, -1] = 0
    seed[5] = 0
    seed[5, :, -1] = 1
    seed[:, 6] = 0
    seed[:, 6, -1] = 1
    out.append(
        Block(
            "household_income",
            inc_cats,
            ["household_type", "relationship"],
            [
                Margin(
                    "S1901 household income x household type",
                    ("household_type", "household_income"),
                    {"household_type": type_group, "household_income": np.r_[np.arange(10), -1]},
                    by_type,
                    given=("household_type",),
                )
            ],
            seed,
            note="S1901 gives income brackets by household type; persons share their household's income",
        )
    )

    # school enrollment | age band, education, employment (DP02 enrollment by level; prior by age)
    college = g.e("DP02", "DP02_0057E")
    high_school = 0.04 * g.e("DP02", "DP02_0056E")  # about 4% of grade 9-12 students are 18 or older
    adults = float(ages_total(g))
    enroll = np.array([max(adults - college - high_school, 0), high_school, college])
    out.append(
        Block(
            "school_enrollment",
            list(vocab.ENROLLMENT),
            ["age_band", "education", "employment_status"],
            [
                Margin(
                    "DP02 school enrollment (adults)",
                    ("school_enrollment",),
                    {"school_enrollment": np.arange(3)},
                    enroll,
                )
            ],
            enrollment_seed(),
            note="DP02 enrollment by level has no age: prior by age and education",
        )
    )
    return out, derived


def language_by_nativity(g: _Geo, lang_cats: list[str]) -> np.ndarray:
    """(nativity x language) prior from S0501 (5+): English only / other language, very well / less than very
    well, per nativity; flat where the state has no S0501."""
    coarse = np.array([0] + [1, 2] * 4)
    out = np.ones((3, len(lang_cats)))
    if g.geo not in g.table("S0501").values.index or np.isnan(g.s("S0501", 2, [45])).any():
        g.skipped.append("S0501 language by nativity (not published for this state): no nativity prior")
        return out
    for i, c in enumerate((2, 4, 5)):
        only, other, less = g.s("S0501", c, [45, 46, 47]) / 100
        shares = np.array([only, max(other - less, 0), less]) + 1e-4
        out[i] = shares[coarse] / np.bincount(coarse)[coarse]
    return out


def ages_total(g: _Geo) -> float:
    return g.e("S0101", "S0101_C01_026E")


AGE_CHILD_PRIOR = [6, 4, 2, 1, 0.5, 0.5, 0.3, 0.3, 0.15, 0.15, 0.03, 0.03, 0.03, 0.03, 0.03]


def relationship_seed() -> np.ndarray:
    m = vocab.MARITAL
    seed = np.ones((len(vocab.AGE), 2, len(m), len(vocab.RELATIONSHIP)))
    married = m.index("Now married, except separated")
    spouse, partner, child = 1, 2, 3
    seed[:, :, [i for i in range(len(m)) if i != married], spouse] = 0  # spouses are married
    seed[:, :, married, partner] = 0
    seed[:, :, married, child] = 0.1
    seed[:, :, m.index("Widowed"), child] = 0.2
    seed[:, :, :, child] *= np.array(AGE_CHILD_PRIOR)[:, None, None]
    seed[0, :, :, 0] = 0.1  # few 18-19-year-olds head a household
    seed[1, :, :, 0] = 0.5
    seed[:2, :, :, 6] = 4  # group quarters: college dorms
    seed[vocab.AGE.index("75-79") :, :, :, 6] = 3  # and nursing homes
    return seed


def household_type_seed(types: np.ndarray) -> np.ndarray:
    m = vocab.MARITAL
    married = m.index("Now married, except separated")
    seed = np.zeros((2, len(m), len(vocab.RELATIONSHIP), len(vocab.HOUSEHOLD_TYPE)))
    # householders: married ones head a married-couple household; others head any other kind, by their sex
    seed[:, married, 0, 0] = 1
    seed[:, married, 0, 3:5] = 0.05
    for s, family in ((0, 1), (1, 2)):
        seed[s, [i for i in range(len(m)) if i != married], 0, family] = 1
    seed[:, [i for i in range(len(m)) if i != married], 0, 3:5] = 1
    seed[:, :, 1, 0] = 1  # spouses
    family = types[:3] / max(types[:3].sum(), 1)
    seed[:, :, 3, :3] = family  # children and other relatives live in family households
    seed[:, :, 4, :3] = family
    seed[:, :, 2, [1, 2, 4]] = 1  # unmarried partners
    seed[:, :, 5, :3] = 0.3 * family
    seed[:, :, 5, 4] = 1  # nonrelatives: mostly nonfamily households
    seed[:, :, 6, 5] = 1  # group quarters
    return seed


def enrollment_seed() -> np.ndarray:
    seed = np.ones((len(vocab.AGE), len(vocab.EDUCATION), 4, 3))
    college_by_age = np.array(
        [1, 0.8, 0.25, 0.1, 0.05, 0.05, 0.02, 0.02, 0.005, 0.005, 0.001, 0.001, 0.001, 0.001, 0.001]
    )
    seed[:, :, :, 2] *= college_by_age[:, None, None]
    seed[:, :2, :, 2] = 0  # college needs a high school diploma
    seed[:, 2:, :, 1] = 0  # high school students have none yet
    seed[2:, :, :, 1] = 0
    seed[1, :, :, 1] *= 0.1
    return seed


def hispanic_race(g: _Geo) -> np.ndarray:
    alone = g.dp("DP05", [37, 38, 39, 44, 52, 57, 35])
    nh = g.dp("DP05", range(77, 84))
    mix = np.maximum(alone - nh, 0)
    return mix if mix.sum() > 0 else np.ones(7)


def geo_spec(geo: str, min_age: int = 18, max_age: int = vocab.MAX_AGE, root: str | None = None) -> GeoSpec:
    """Everything ACS 2018 (or a fetched folder of the same layout, `root`) says about one state."""
    geos = geographies(root).set_index("geo")
    if geo not in geos.index:
        from factory.errors import did_you_mean

        raise DataError(f"{NAME}: unknown geography '{geo}'{did_you_mean(geo, list(geos.index))}")
    g = _Geo(geo, root)
    margins = core_margins(g)
    blks, derived = blocks(g)
    row = geos.loc[geo]
    spec = GeoSpec(
        geo=geo,
        geo_id=str(row["geo_id"]),
        name=str(row["name"]),
        population=population(geo, min_age, max_age, root),
        core_margins=margins,
        blocks=blks,
        core_seed=core_seed(),
        derived_ages=derived,
        hispanic_race=hispanic_race(g),
        min_age=min_age,
        max_age=max_age,
        sources=[f"{NAME if root is None else root} {t}" for t in TABLES],
    )
    spec.sources += [f"skipped: {s}" for s in g.skipped]
    return spec
