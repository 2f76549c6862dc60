"""ACS crosstabs by race, turned into margins on the fit's exclusive race/ethnicity.

The census publishes a table by race as race-alone rows (White alone, Black alone, ...; Hispanic people inside their
race), a Hispanic row and a White-alone-not-Hispanic row. The fit's race/ethnicity is exclusive (Hispanic, then the
non-Hispanic races), so a non-Hispanic row is its race-alone row minus that race's share of the Hispanic row:

    non-Hispanic race r = race-alone r - k_r x Hispanic      (k_r: Hispanic people of race r, DP05, all ages)

This is the assumption the sampler makes (a Hispanic person's race is drawn from the state's Hispanic-by-race mix,
independent of the rest), so the sample's race-alone rows come out as the census's wherever the non-Hispanic rows
do. A row whose remainder is mostly Hispanic (under 10% of the race-alone row is left, typical of 'Some other
race'), clearly negative or suppressed is left out of the margin rather than trusted.

Universes that start below 18 are reconciled by taking out each race's 15-17 (or 16-17) year-olds: all never
married (S1201, 15+) and employed as the 16-19 row of S2301 says (16+). Their race mix comes from B01001A-I when
the census folder has them, else from the state's all-ages mix (DP05), which understates how Hispanic the young are.
"""

from __future__ import annotations

import numpy as np

from factory.census import vocab
from factory.census.acs2018_core import EDU3, EDU4, _emp_from_rates, age_map, hispanic_race, ident
from factory.census.acs2018_tables import RACE_ITERATIONS, S1201_MARITAL_COLS, _Geo
from factory.census.ipf import Margin

MIN_NON_HISPANIC = 0.1  # a non-Hispanic remainder under this share of its race-alone row is not used
NEGATIVE_SLACK = 0.05  # negative cells of a remainder (rounding) up to this share of it are set to zero
B01001_AGES = [(15, 17), (18, 19), (20, 24), (25, 29), (30, 34), (35, 44), (45, 54), (55, 64), (65, 74), (75, 84)]
B01001_AGES += [(85, 99)]
CIVILIAN = np.array([0, 0, -1, 0])  # employment map: civilians (Armed Forces outside the universe)


def hispanic_shares(g: _Geo) -> np.ndarray:
    """k_r: the share of the state's Hispanic people in each race-alone group (vocab.RACE order)."""
    mix = hispanic_race(g)
    return mix / mix.sum()


def to_race_ethnicity(alone: np.ndarray, hispanic: np.ndarray, white_nh: np.ndarray, k: np.ndarray):
    """Race-alone rows (7, ...) + Hispanic (...) + White NH (...) -> rows in RACE_ETHNICITY order (8, ...) and which
    of them are usable."""
    out = np.zeros((len(vocab.RACE_ETHNICITY), *np.shape(hispanic)))
    ok = np.zeros(len(vocab.RACE_ETHNICITY), dtype=bool)
    for i, row in ((0, hispanic), (1, white_nh)):
        ok[i] = bool(np.isfinite(row).all() and np.sum(row) > 0)
        out[i] = np.nan_to_num(row)
    for r in range(1, len(vocab.RACE)):
        rest = alone[r] - k[r] * hispanic
        if not (np.isfinite(rest).all() and ok[0]):
            continue
        kept = rest.clip(min=0)
        if kept.sum() < MIN_NON_HISPANIC * np.sum(alone[r]) or -rest[rest < 0].sum() > NEGATIVE_SLACK * kept.sum():
            continue
        out[r + 1], ok[r + 1] = kept, True
    return out, ok


def fill_by_ratio(g: _Geo, alone: np.ndarray, table: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Every race/ethnicity row of a table that sets the race mix: a row left out would leave that group's mass to
    the seed. Unusable non-Hispanic rows are their race-alone row x the state's non-Hispanic/alone ratio (DP05, all
    ages), or where that row is suppressed too, the group's DP05 share of the table."""
    dp_alone = g.dp("DP05", [37, 38, 39, 44, 52, 57, 35])
    dp_nh = g.dp("DP05", range(77, 84))
    ratio = np.divide(dp_nh, dp_alone, out=np.zeros(7), where=dp_alone > 0)
    dp_share = np.r_[g.e("DP05", "DP05_0071E"), dp_nh] / g.e("DP05", "DP05_0070E")
    out = table.copy()
    for i in np.flatnonzero(~ok):
        row = alone[i - 1] * ratio[i - 1] if i >= 1 else np.full(table.shape[1:], np.nan)
        out[i] = row if np.isfinite(row).all() else dp_share[i] * table[ok].sum(axis=0) / dp_share[ok].sum()
    return out


def race_map(ok: np.ndarray) -> np.ndarray:
    """race_ethnicity -> the margin's rows (the usable ones, in order; -1 for the rest)."""
    return np.where(ok, np.cumsum(ok) - 1, -1)


def _s1501_rows(g: _Geo, row: int) -> list[list[float]]:
    per_sex = []
    for c in (3, 5):
        pop, hs, ba = g.s("S1501", c, [row, row + 1, row + 2])
        per_sex.append([pop - hs, hs - ba, ba])
    return per_sex


def detailed_age_race(g: _Geo) -> bool:
    return g.has(*(f"B01001{s}" for s in RACE_ITERATIONS))


def b01001(g: _Geo, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Persons by race/ethnicity x B01001_AGES x sex from B01001A-I (rows 6-16 male, 21-31 female)."""
    per = np.array(
        [np.stack([g.b(f"B01001{s}", range(6, 17)), g.b(f"B01001{s}", range(21, 32))], axis=-1) for s in "ABCDEFGHI"]
    )
    return to_race_ethnicity(per[:7], per[8], per[7], k)


def teens(g: _Geo, k: np.ndarray, first_age: int) -> np.ndarray:
    """Persons aged first_age..17 in each race/ethnicity group (first_age 15 or 16)."""
    share = (18 - first_age) / 3  # of the 15-17
    dp = np.r_[g.e("DP05", "DP05_0071E"), g.dp("DP05", range(77, 84))]
    total = g.e("S0101", "S0101_C03_021E") + g.e("S0101", "S0101_C05_021E")
    fallback = total * dp / dp.sum()
    if detailed_age_race(g):
        by_race, ok = b01001(g, k)
        young = by_race[:, 0].sum(axis=-1)  # 15-17, both sexes
        return share * np.where(ok, young, fallback)
    return share * fallback


def race_mix(g: _Geo, k: np.ndarray) -> Margin:
    """Race/ethnicity of the adults: B01001A-I by age and sex when the folder has them, else S2101 (civilians 18+)."""
    if detailed_age_race(g):
        by_race, ok = b01001(g, k)
        if ok[:2].all():
            alone = np.array(
                [
                    np.stack([g.b(f"B01001{s}", range(6, 17)), g.b(f"B01001{s}", range(21, 32))], -1)
                    for s in RACE_ITERATIONS[:7]
                ]
            )
            by_race = fill_by_ratio(g, alone, by_race, ok)
            return Margin(
                "B01001A-I race/ethnicity x age x sex",
                ("race_ethnicity", "age_band", "sex"),
                {"race_ethnicity": ident("race_ethnicity"), "age_band": age_map(B01001_AGES[1:]), "sex": ident("sex")},
                by_race[:, 1:],
                given=("age_band", "sex"),
            )
    rows = g.s("S2101", 1, range(14, 23))  # 7 race-alone rows, Hispanic, White NH
    adults, ok = to_race_ethnicity(rows[:7], rows[7], rows[8], k)
    if not ok[:2].all():
        return race_mix_16(g)
    if not ok.all():
        g.skipped.append(
            "S2101 non-Hispanic rows "
            + ", ".join(vocab.RACE_ETHNICITY[i] for i in np.flatnonzero(~ok))
            + " (suppressed or mostly Hispanic): race-alone rows x the DP05 non-Hispanic ratio"
        )
    return Margin(
        "S2101 race/ethnicity (civilians 18+)",
        ("race_ethnicity", "employment_status"),
        {"race_ethnicity": ident("race_ethnicity"), "employment_status": CIVILIAN},
        fill_by_ratio(g, rows[:7], adults, ok)[:, None],
    )


def race_mix_16(g: _Geo) -> Margin:
    """The fallback: race/ethnicity of the 16+ (S2301 population rows, the non-Hispanic part in the state's DP05
    ratio); suppressed rows fall back to DP05 shares of all ages."""
    alone16 = g.s("S2301", 1, range(12, 19))  # White, Black, AIAN, Asian, NHPI, SOR, Two+
    hisp16, wnh16 = g.e("S2301", "S2301_C01_019E"), g.e("S2301", "S2301_C01_020E")
    dp_alone = g.dp("DP05", [37, 38, 39, 44, 52, 57, 35])
    dp_nh = g.dp("DP05", range(77, 84))
    ratio = np.divide(dp_nh, dp_alone, out=np.zeros(7), where=dp_alone > 0)
    nh16 = alone16 * ratio
    nh16[0] = wnh16
    race = np.r_[hisp16, nh16]
    if np.isnan(race).any() or race.sum() <= 0:
        g.skipped.append("S2301 race of the 16+ (suppressed cells): DP05 all-ages race shares used instead")
        race = np.r_[g.e("DP05", "DP05_0071E"), dp_nh]
    return Margin(
        "S2301/DP05 race and Hispanic origin (16+)",
        ("race_ethnicity",),
        {"race_ethnicity": ident("race_ethnicity")},
        race,
    )


def core_race_margins(g: _Geo) -> list[Margin]:
    """Education, employment and marital status by race/ethnicity (and the adults' race mix)."""
    k = hispanic_shares(g)
    out = [race_mix(g, k)]
    by_age = detailed_age_race(g)  # then B01001 owns the race mix of every age group: the rest are conditionals

    # education x race x sex (25+): C15002A-I (4 levels) when the folder has them, else S1501's race rows (3)
    if g.has(*(f"C15002{s}" for s in RACE_ITERATIONS)):
        per = np.array(
            [np.stack([g.b(f"C15002{s}", range(3, 7)), g.b(f"C15002{s}", range(8, 12))]) for s in "ABCDEFGIH"]
        )  # race-alone rows, Hispanic, White NH: the order of the S1501 rows below
        name, levels = "C15002A-I education x race/ethnicity x sex (25+)", EDU4
    else:
        per = np.array([_s1501_rows(g, row) for row in (28, 34, 37, 40, 43, 46, 49, 52, 31)])
        name, levels = "S1501 education x race/ethnicity x sex (25+)", EDU3
    edu, ok = to_race_ethnicity(per[:7], per[7], per[8], k)
    if ok.sum() >= 2:
        out.append(
            Margin(
                name,
                ("race_ethnicity", "age_band", "sex", "education"),
                {
                    "race_ethnicity": race_map(ok),
                    "age_band": age_map([(25, 99)]),
                    "sex": ident("sex"),
                    "education": levels,
                },
                edu[ok][:, None],
                # without B01001 this table also carries the race mix of the 25+ (against S2101's of the 18+)
                given=("race_ethnicity", "age_band", "sex") if by_age else ("age_band", "sex"),
            )
        )
    else:
        g.skipped.append(f"{name.split(' ')[0]} education x race (suppressed cells)")

    # employment x race (S2301 rates x populations, 16+; the 16-17 taken out with the 16-19 row's mix)
    rows = list(range(12, 21))
    emp = _emp_from_rates(*(g.s("S2301", c, rows) for c in (1, 2, 3, 4)))
    table, ok = to_race_ethnicity(emp[:7], emp[7], emp[8], k)
    young = _emp_from_rates(*(g.s("S2301", c, [2]) for c in (1, 2, 3, 4)))[0]
    table = (table - teens(g, k, 16)[:, None] * young / young.sum()).clip(min=0)
    if ok.sum() >= 2:
        out.append(
            Margin(
                "S2301 employment x race/ethnicity (16-17 taken out)",
                ("race_ethnicity", "employment_status"),
                {"race_ethnicity": race_map(ok), "employment_status": ident("employment_status")},
                table[ok],
                given=("race_ethnicity",),
            )
        )

    # marital status x race (S1201 percents x populations, 15+; the 15-17 taken out as never married)
    rows = list(range(18, 27))
    total = g.s("S1201", 1, rows)
    mar = np.stack([total * g.s("S1201", S1201_MARITAL_COLS[m], rows) / 100 for m in vocab.MARITAL], axis=-1)
    table, ok = to_race_ethnicity(mar[:7], mar[7], mar[8], k)
    table[:, vocab.MARITAL.index("Never married")] -= teens(g, k, 15)
    table = table.clip(min=0)
    if ok.sum() >= 2:
        out.append(
            Margin(
                "S1201 marital status x race/ethnicity (15-17 taken out)",
                ("race_ethnicity", "marital_status"),
                {"race_ethnicity": race_map(ok), "marital_status": ident("marital_status")},
                table[ok],
                given=("race_ethnicity",),
            )
        )
    return out


def veteran_race_margins(g: _Geo) -> list[Margin]:
    """S2101 veteran status by race/ethnicity (civilians 18+) and by education (civilians 25+)."""
    k = hispanic_shares(g)
    rows = range(14, 23)
    vet = np.stack([g.s("S2101", 3, rows), g.s("S2101", 5, rows)], axis=-1)
    table, ok = to_race_ethnicity(vet[:7], vet[7], vet[8], k)
    out = []
    if ok.sum() >= 2:
        out.append(
            Margin(
                "S2101 veteran x race/ethnicity",
                ("race_ethnicity", "employment_status", "veteran"),
                {"race_ethnicity": race_map(ok), "employment_status": CIVILIAN, "veteran": np.arange(2)},
                table[ok][:, None],
                given=("race_ethnicity", "employment_status"),
            )
        )
    by_edu = np.stack([g.s("S2101", 3, range(27, 31)), g.s("S2101", 5, range(27, 31))], axis=-1)
    if np.isfinite(by_edu).all():
        out.append(
            Margin(
                "S2101 veteran x education (25+)",
                ("age_band", "education", "employment_status", "veteran"),
                {
                    "age_band": age_map([(25, 99)]),
                    "education": EDU4,
                    "employment_status": CIVILIAN,
                    "veteran": np.arange(2),
                },
                by_edu[None, :, None],
                given=("age_band", "education", "employment_status"),
            )
        )
    return out
