"""ACS 2018 core margins: the tables that cross age band, sex, race/ethnicity, education, marital status,
employment and nativity, and the structural prior of the core joint.

Where the census gives rates or percents (S1201, S2301, S0501) counts are rate x universe; suppressed cells drop the
margin that needs them and the manifest says so.
"""

from __future__ import annotations

import numpy as np

from factory.census import vocab
from factory.census.acs2018_tables import S1201_MARITAL_COLS, _Geo
from factory.census.ipf import Margin


def core_margins_age(g: _Geo) -> np.ndarray:
    male, female = g.s("S0101", 3, range(5, 20)), g.s("S0101", 5, range(5, 20))  # 15-19 ... 85+
    m1517, f1517 = g.e("S0101", "S0101_C03_021E"), g.e("S0101", "S0101_C05_021E")
    return np.stack([np.r_[male[0] - m1517, male[1:]], np.r_[female[0] - f1517, female[1:]]], axis=1)


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

    # education (S1501): 18-24 by sex (4 levels), 25+ by sex (7), 25+ age bands by sex (3); by race: acs2018_race
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


def hispanic_race(g: _Geo) -> np.ndarray:
    alone = g.dp("DP05", [37, 38, 39, 44, 52, 57, 35])
    nh = g.dp("DP05", range(77, 84))
    mix = np.maximum(alone - nh, 0)
    return mix if mix.sum() > 0 else np.ones(7)
