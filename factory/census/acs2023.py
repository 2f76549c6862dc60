"""ACS 2023 1-year subset (50 states; DP02, DP03, DP05, S2301, S2401) -> the margins of one geography.

Five tables cannot carry the whole structure, so each state's ACS 2018 fit is the seed: its joint (marital
status by age, education by age, nativity by age, ...) and its conditionals are raked to every 2023 table that
exists. What 2023 does not measure (relationship, household type) therefore keeps the 2018 structure, and the card
says so. Labels are Census `!!` paths; a missing label is an error naming the file and the label.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np
import pandas as pd

from factory.census import acs2018, vocab
from factory.census.apiformat import ANNOTATIONS
from factory.census.ipf import Margin
from factory.census.model import Block, GeoSpec, fit
from factory.errors import DataError
from factory.resources import data_path

NAME = "ACS 2023 1-year subset"
FILE = "factory/data/census/acs2023_1yr_state_subset.parquet"
OCC_MAJOR = np.array([0] * 11 + [1] * 6 + [2] * 2 + [3] * 3 + [4] * 3)  # 25 occupations -> 5 DP03 groups
IND_MAJOR = np.array([0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 7, 8, 8, 8, 9, 9, 10, 10, 11, 12])  # 20 -> 13 DP03 groups


@lru_cache(maxsize=1)
def frame() -> pd.DataFrame:
    df = pd.read_parquet(data_path("census", "acs2023_1yr_state_subset.parquet"))
    for col in ("state_po", "table", "Label", "Value"):
        if col not in df.columns:
            raise DataError(f"{FILE}: missing column '{col}'")
    return df


@cache
def _table(geo: str, table: str) -> dict[str, float]:
    df = frame()
    rows = df[(df["state_po"] == geo) & (df["table"] == table)]
    if rows.empty:
        raise DataError(f"{FILE}: no {table} rows for geography '{geo}'")
    values = pd.to_numeric(rows["Value"], errors="coerce")
    out: dict[str, float] = {}
    for label, value in zip(rows["Label"], values):
        if label in out:  # the API repeats some universe rows; the first is kept
            continue
        out[label] = np.nan if pd.isna(value) or int(value) in ANNOTATIONS else float(value)
    return out


def _v(geo: str, table: str, label: str) -> float:
    t = _table(geo, table)
    if label not in t:
        raise DataError(f"{FILE}: {table} for {geo} has no label '{label}'")
    return t[label]


def geographies() -> pd.DataFrame:
    from factory.census.states import states

    have = set(frame()["state_po"])
    rows = [s for s in states() if s["state_po"] in have]
    return pd.DataFrame(
        {
            "geo": [s["state_po"] for s in rows],
            "geo_id": [f"0400000US{s['state_fips']}" for s in rows],
            "name": [s["state_name"] for s in rows],
            "fips": [s["state_fips"] for s in rows],
        }
    )


SA = "Estimate!!SEX AND AGE!!Total population"


def _ages(geo: str) -> np.ndarray:
    """Population of the 2023 DP05 bands from 18 on: 18-19, 20-24, 25-34, 35-44, 45-54, 55-59, 60-64, 65-74,
    75-84, 85+ (18-19 = 15-19 minus 15-17, and 15-17 = under 18 minus under 15)."""
    band = lambda s: _v(geo, "DP05", f"{SA}!!{s}")  # noqa: E731
    under15 = band("Under 5 years") + band("5 to 9 years") + band("10 to 14 years")
    a1819 = band("15 to 19 years") - (band("Under 18 years") - under15)
    rest = [
        band(f"{s}")
        for s in (
            "20 to 24 years",
            "25 to 34 years",
            "35 to 44 years",
            "45 to 54 years",
            "55 to 59 years",
            "60 to 64 years",
            "65 to 74 years",
            "75 to 84 years",
            "85 years and over",
        )
    ]
    return np.array([a1819, *rest])


AGE_GROUPS = [(18, 19), (20, 24), (25, 34), (35, 44), (45, 54), (55, 59), (60, 64), (65, 74), (75, 84), (85, 99)]


def population(geo: str, min_age: int = 18, max_age: int = vocab.MAX_AGE) -> float:
    from factory.census.model import GeoSpec, universe_factor

    probe = GeoSpec(geo, "", "", 0.0, [], [], min_age=min_age, max_age=max_age)
    frac = vocab.age_fraction_matrix(AGE_GROUPS)  # fine band -> DP05 group (bands nest: 0 or 1)
    per_fine = (frac / np.maximum(frac.sum(axis=0), 1)) @ _ages(geo)  # a group's people split over its 5-year bands
    return float((per_fine * universe_factor(probe)).sum())


def ident(dim: str) -> np.ndarray:
    return np.arange(len(vocab.CORE_DIMS[dim]))


def _s2301(geo: str, rows: list[str]) -> np.ndarray:
    vals = []
    for prefix in ("Total", "Labor Force Participation Rate", "Employment/Population Ratio", "Unemployment rate"):
        vals.append(np.array([_v(geo, "S2301", f"{prefix}!!Estimate!!{r}") for r in rows]))
    return np.stack(vals)


def core_margins(geo: str) -> list[Margin]:
    out = []
    out.append(Margin("DP05 age", ("age_band",), {"age_band": vocab.band_map(AGE_GROUPS)}, _ages(geo), mode="count"))
    m18, f18 = _v(geo, "DP05", f"{SA}!!18 years and over!!Male"), _v(geo, "DP05", f"{SA}!!18 years and over!!Female")
    m65, f65 = _v(geo, "DP05", f"{SA}!!65 years and over!!Male"), _v(geo, "DP05", f"{SA}!!65 years and over!!Female")
    out.append(
        Margin(
            "DP05 sex x age (18-64, 65+)",
            ("age_band", "sex"),
            {"age_band": vocab.band_map([(18, 64), (65, 99)]), "sex": ident("sex")},
            np.array([[m18 - m65, f18 - f65], [m65, f65]]),
            mode="count",
        )
    )
    hl = "Estimate!!HISPANIC OR LATINO AND RACE!!Total population"
    race = [_v(geo, "DP05", f"{hl}!!Hispanic or Latino (of any race)")] + [
        _v(geo, "DP05", f"{hl}!!Not Hispanic or Latino!!{r}")
        for r in (
            "White alone",
            "Black or African American alone",
            "American Indian and Alaska Native alone",
            "Asian alone",
            "Native Hawaiian and Other Pacific Islander alone",
            "Some Other Race alone",
            "Two or More Races",
        )
    ]
    out.append(
        Margin(
            "DP05 race and Hispanic origin (all ages)",
            ("race_ethnicity",),
            {"race_ethnicity": ident("race_ethnicity")},
            np.nan_to_num(np.array(race)),
        )
    )
    ms = "Estimate!!MARITAL STATUS"
    marital = np.array(
        [
            [_v(geo, "DP02", f"{ms}!!{sex} 15 years and over!!{m}") for m in vocab.MARITAL]
            for sex in ("Males", "Females")
        ]
    )
    out.append(
        Margin(
            "DP02 marital status x sex (15+)",
            ("sex", "marital_status"),
            {"sex": ident("sex"), "marital_status": ident("marital_status")},
            marital,
            given=("sex",),
        )
    )
    ed = "Estimate!!EDUCATIONAL ATTAINMENT!!Population 25 years and over"
    edu = np.array([_v(geo, "DP02", f"{ed}!!{e}") for e in vocab.EDUCATION])
    out.append(
        Margin(
            "DP02 education (25+)",
            ("age_band", "education"),
            {"age_band": vocab.band_map([(25, 99)]), "education": ident("education")},
            edu[None],
            given=("age_band",),
        )
    )
    ages = [
        f"AGE!!{a}"
        for a in (
            "16 to 19 years",
            "20 to 24 years",
            "25 to 29 years",
            "30 to 34 years",
            "35 to 44 years",
            "45 to 54 years",
            "55 to 59 years",
            "60 to 64 years",
            "65 to 74 years",
            "75 years and over",
        )
    ]
    emp_age = acs2018._emp_from_rates(*_s2301(geo, ages), no_armed=np.array([False] * 8 + [True, True]))
    out.append(
        Margin(
            "S2301 employment x age",
            ("age_band", "employment_status"),
            {
                "age_band": vocab.band_map(
                    [(16, 19), (20, 24), (25, 29), (30, 34), (35, 44), (45, 54), (55, 59), (60, 64), (65, 74), (75, 99)]
                ),
                "employment_status": ident("employment_status"),
            },
            emp_age,
            given=("age_band",),
        )
    )
    sexes = [f"Population 20 to 64 years!!SEX!!{s}" for s in ("Male", "Female")]
    out.append(
        Margin(
            "S2301 employment x sex (20-64)",
            ("age_band", "sex", "employment_status"),
            {
                "age_band": vocab.band_map([(20, 64)]),
                "sex": ident("sex"),
                "employment_status": ident("employment_status"),
            },
            acs2018._emp_from_rates(*_s2301(geo, sexes))[None],
            given=("age_band", "sex"),
        )
    )
    eds = [
        f"EDUCATIONAL ATTAINMENT!!Population 25 to 64 years!!{e}"
        for e in (
            "Less than high school graduate",
            "High school graduate (includes equivalency)",
            "Some college or associate's degree",
            "Bachelor's degree or higher",
        )
    ]
    out.append(
        Margin(
            "S2301 employment x education (25-64)",
            ("age_band", "education", "employment_status"),
            {
                "age_band": vocab.band_map([(25, 64)]),
                "education": acs2018.EDU4,
                "employment_status": ident("employment_status"),
            },
            acs2018._emp_from_rates(*_s2301(geo, eds))[None],
            given=("age_band", "education"),
        )
    )
    nat = np.array(
        [
            _v(geo, "DP02", "Estimate!!PLACE OF BIRTH!!Total population!!Native"),
            _v(geo, "DP02", "Estimate!!U.S. CITIZENSHIP STATUS!!Foreign-born population!!Naturalized U.S. citizen"),
            _v(geo, "DP02", "Estimate!!U.S. CITIZENSHIP STATUS!!Foreign-born population!!Not a U.S. citizen"),
        ]
    )
    out.append(Margin("DP02 nativity and citizenship (all ages)", ("nativity",), {"nativity": ident("nativity")}, nat))
    for m in out:
        if not np.isfinite(m.table).all():
            raise DataError(f"{FILE}: {geo}: suppressed or missing values in {m.name}")
    return out


def block_margins(geo: str, blocks: dict[str, Block]) -> dict[str, list[Margin]]:
    employed = np.array([0, -1, -1, -1])
    out: dict[str, list[Margin]] = {}
    male = [v for k, v in _table(geo, "S2401").items() if k.startswith("Male!!Estimate!!")]
    female = [v for k, v in _table(geo, "S2401").items() if k.startswith("Female!!Estimate!!")]
    rows = [r - 1 for r in acs2018.OCC_ROWS]  # same row order as 2018 (the total first)
    occ = np.array([[male[r] for r in rows], [female[r] for r in rows]])
    out["occupation"] = [
        Margin(
            "S2401 occupation x sex",
            ("sex", "employment_status", "occupation"),
            {
                "sex": ident("sex"),
                "employment_status": employed,
                "occupation": np.arange(len(vocab.OCCUPATION) + 1) - 1,
            },
            occ[:, None, :],
            given=("sex", "employment_status"),
        )
    ]
    ind_p = "Estimate!!INDUSTRY!!Civilian employed population 16 years and over"
    ind = [v for k, v in _table(geo, "DP03").items() if k.startswith(ind_p + "!!")]
    out["industry"] = [
        Margin(
            "DP03 industry",
            ("employment_status", "industry"),
            {"employment_status": employed, "industry": np.r_[-1, IND_MAJOR]},
            np.array(ind[:13])[None],
            given=("employment_status",),
        )
    ]
    cw = "Estimate!!CLASS OF WORKER!!Civilian employed population 16 years and over"
    cls = [
        _v(geo, "DP03", f"{cw}!!{c}")
        for c in (
            "Private wage and salary workers",
            "Government workers",
            "Self-employed in own not incorporated business workers",
            "Unpaid family workers",
        )
    ]
    out["class_of_worker"] = [
        Margin(
            "DP03 class of worker",
            ("employment_status", "class_of_worker"),
            {"employment_status": employed, "class_of_worker": np.arange(5) - 1},
            np.array(cls)[None],
            given=("employment_status",),
        )
    ]
    hi = "Estimate!!HEALTH INSURANCE COVERAGE!!Civilian noninstitutionalized population 19 to 64 years"
    ins = []
    for status in ("In labor force:!!Employed:", "In labor force:!!Unemployed:", "Not in labor force:"):
        ins.append(
            [
                _v(geo, "DP03", f"{hi}!!{status}!!With health insurance coverage"),
                _v(geo, "DP03", f"{hi}!!{status}!!No health insurance coverage"),
            ]
        )
    out["health_insurance"] = [
        Margin(
            "DP03 insurance x employment (19-64)",
            ("age_s2701", "employment_status", "health_insurance"),
            {
                "age_s2701": np.array([-1, 0, 0, 0, 0, 0, -1, -1]),
                "employment_status": np.array([0, 1, -1, 2]),
                "health_insurance": np.arange(2),
            },
            np.array(ins)[None],
            given=("age_s2701", "employment_status"),
        )
    ]
    vs = "Estimate!!VETERAN STATUS!!Civilian population 18 years and over"
    vets = _v(geo, "DP02", f"{vs}!!Civilian veterans")
    out["veteran"] = [
        Margin(
            "DP02 veteran status (civilians 18+)",
            ("employment_status", "veteran"),
            {"employment_status": np.array([0, 0, -1, 0]), "veteran": np.arange(2)},
            np.array([[vets, _v(geo, "DP02", vs) - vets]]),
            given=("employment_status",),
        )
    ]
    lp = "Estimate!!LANGUAGE SPOKEN AT HOME!!Population 5 years and over"
    lang = [_v(geo, "DP02", f"{lp}!!English only")]
    for name in ("Spanish", "Other Indo-European languages", "Asian and Pacific Islander languages", "Other languages"):
        total, less = (
            _v(geo, "DP02", f"{lp}!!{name}"),
            _v(geo, "DP02", f'{lp}!!{name}!!Speak English less than "very well"'),
        )
        lang += [total - less, less]
    out["language"] = [
        Margin(
            "DP02 language x English ability (5+)", ("language",), {"language": np.arange(len(lang))}, np.array(lang)
        )
    ]
    inc_p = "Estimate!!INCOME AND BENEFITS (IN 2023 INFLATION-ADJUSTED DOLLARS)!!Total households"
    inc = [_v(geo, "DP03", f"{inc_p}!!{b}") for b in vocab.HOUSEHOLD_INCOME]
    out["household_income"] = [
        Margin(
            "DP03 household income",
            ("household_income",),
            {"household_income": np.r_[np.arange(10), -1]},
            np.array(inc),
        )
    ]
    se = "Estimate!!SCHOOL ENROLLMENT!!Population 3 years and over enrolled in school"
    college, hs = (
        _v(geo, "DP02", f"{se}!!College or graduate school"),
        0.04 * _v(geo, "DP02", f"{se}!!High school (grades 9-12)"),
    )
    adults = _v(geo, "DP05", f"{SA}!!18 years and over")
    out["school_enrollment"] = [
        Margin(
            "DP02 school enrollment (adults)",
            ("school_enrollment",),
            {"school_enrollment": np.arange(3)},
            np.array([max(adults - college - hs, 0), hs, college]),
        )
    ]
    for margins in out.values():
        for m in margins:
            if not np.isfinite(m.table).all():
                raise DataError(f"{FILE}: {geo}: suppressed or missing values in {m.name}")
    return out


def geo_spec(geo: str, min_age: int = 18, max_age: int = vocab.MAX_AGE) -> GeoSpec:
    geos = geographies().set_index("geo")
    if geo not in geos.index:
        from factory.errors import did_you_mean

        raise DataError(f"{NAME}: unknown geography '{geo}'{did_you_mean(geo, list(geos.index))}")
    base_spec = acs2018.geo_spec(geo, min_age, max_age)
    base = fit(base_spec)
    blocks = []
    new = block_margins(geo, {b.name: b for b in base_spec.blocks})
    for b in base_spec.blocks:
        dims, joint = base.blocks[b.name]
        prior = joint / np.maximum(joint.sum(axis=-1, keepdims=True), 1e-300)
        prior = np.where(joint.sum(axis=-1, keepdims=True) > 0, prior, 0 if b.seed is None else b.seed)
        margins = new.get(b.name, [])
        note = (
            f"ACS 2023 {', '.join(m.name for m in margins)}; " if margins else "no 2023 table; "
        ) + "seeded by the ACS 2018 conditional of this state"
        blocks.append(Block(b.name, b.categories, b.parents, margins, prior, note))
    row = geos.loc[geo]
    return GeoSpec(
        geo=geo,
        geo_id=str(row["geo_id"]),
        name=str(row["name"]),
        population=population(geo, min_age, max_age),
        core_margins=core_margins(geo),
        blocks=blocks,
        core_seed=base.core / base.core.max(),
        derived_ages=base_spec.derived_ages,
        hispanic_race=base_spec.hispanic_race,
        seed_margins=base_spec.core_margins + base_spec.seed_margins,
        min_age=min_age,
        max_age=max_age,
        sources=[f"{NAME} {t}" for t in ("DP02", "DP03", "DP05", "S2301", "S2401")]
        + [f"seed: {s}" for s in base_spec.sources],
    )
