"""ACS 2018 conditional attributes: each block's parents, the tables that cross it, and its prior.

Priors (seeds) encode what no table says but common sense does: who can be a spouse, at what ages people live with
their parents or in group quarters, which language goes with which origin. They are priors only: IPF moves them to
every table that exists.
"""

from __future__ import annotations

import numpy as np

from factory.census import vocab
from factory.census.acs2018_core import age_map, ident
from factory.census.acs2018_race import veteran_race_margins
from factory.census.acs2018_tables import IND_ROWS, OCC_ROWS, _Geo
from factory.census.ipf import Margin
from factory.census.model import Block


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

    # veteran | age band, sex, employment, race/ethnicity, education (S2101: civilians 18+; active duty are not
    # counted as veterans)
    vet_age = np.stack([g.s("S2101", c, range(9, 14)) for c in (3, 5)], axis=-1)
    vet_sex = np.stack([g.s("S2101", c, [7, 8]) for c in (3, 5)], axis=-1)
    seed = np.ones((len(vocab.AGE), 2, 4, len(vocab.RACE_ETHNICITY), len(vocab.EDUCATION), 2))
    seed[:, :, 2, :, :, 0] = 0
    civ = np.array([0, 0, -1, 0])
    out.append(
        Block(
            "veteran",
            list(vocab.VETERAN),
            ["age_band", "sex", "employment_status", "race_ethnicity", "education"],
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
                *veteran_race_margins(g),
            ],
            seed,
            note="S2101 crosses veteran status with age, with sex, with race/ethnicity and with education, each alone",
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
