"""Census crosstabs measured on sampled people: education, veteran status, employment and marital status by race.

    .venv/bin/python bench/census_holdout.py [--persons 1000000] [--states CA GA NY] [--seed 0] [--census-dir DIR]

Per state, a fitted joint (ACS 2018, as `meta_personas` fits it) is sampled and compared with ACS tables that cross
race/ethnicity or education with another attribute:

    education x race      S1501 race rows (25+; <HS / HS..associate / BA+)
    veteran x race        S2101 race rows (civilians 18+)
    veteran x education   S2101 education rows (civilians 25+; <HS / HS / some college / BA+)
    employment x race     S2301 race rows (16+ in the census, 18+ in the sample; rates x populations)
    marital x race        S1201 race rows (15+ in the census, 18+ in the sample)

The figure is the issue's measure: the total-variation distance between the sample's and the census's joint
distribution over (group x attribute) within the table's universe, where the groups partition that universe: the
seven race-alone rows (Hispanic people counted in their race), or the education rows. It therefore also counts a
wrong race mix inside the universe (e.g. the 25+ of S1501). Rows with suppressed cells are left out on both sides.
A second table gives the TVD *given* the group: the attribute's distribution within each of the nine published
rows (the seven, Hispanic, White alone not Hispanic), averaged with weights = the sample's persons in the row.
Where the census universe starts below 18 (S2301 16+, S1201 15+) both figures keep that gap (teenagers under 18
are mostly not working and never married), so they have a floor above zero. Sampling is systematic: seed-to-seed
noise is about 0.001 at 1M persons.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tables import print_table  # noqa: E402

from factory.census import acs2018, model, vocab  # noqa: E402

EDU3 = np.array([0, 0, 1, 1, 1, 2, 2])
EDU4 = np.array([0, 0, 1, 2, 2, 3, 3])
ROW_NAMES = ["White alone", "Black", "AIAN", "Asian", "NHPI", "Some other race", "Two or more", "Hispanic", "White NH"]


def race_rows(codes: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Membership of each person in the census's nine overlapping race rows (ROW_NAMES order)."""
    rows = [codes["race"] == r for r in range(len(vocab.RACE))]
    return rows + [codes["race_ethnicity"] == 0, codes["race_ethnicity"] == 1]


def joint_tvd(rows: list[np.ndarray], value: np.ndarray, universe: np.ndarray, census: np.ndarray) -> float:
    """TVD of the (row x value) distribution in the universe; `rows` partition it. Suppressed rows left out."""
    k = census.shape[1]
    keep = [i for i, goal in enumerate(census) if np.isfinite(goal).all()]
    got = np.array([np.bincount(value[rows[i] & universe], minlength=k) for i in keep], dtype=np.float64)
    want = census[keep]
    return float(0.5 * np.abs(got / got.sum() - want / want.sum()).sum())


def row_tvd(rows: list[np.ndarray], value: np.ndarray, universe: np.ndarray, census: np.ndarray) -> tuple[float, list]:
    """Mean over rows (weighted by sample persons) of the TVD of `value` within the row; and per-row shares."""
    k = census.shape[1]
    total, weight, per_row = 0.0, 0.0, []
    for mask, goal in zip(rows, census):
        inside = mask & universe & (value >= 0)
        n = int(inside.sum())
        if n == 0 or not np.isfinite(goal).all() or goal.sum() <= 0:
            per_row.append(None)
            continue
        got = np.bincount(value[inside], minlength=k) / n
        want = goal / goal.sum()
        total += n * 0.5 * np.abs(got - want).sum()
        weight += n
        per_row.append((got, want))
    return total / max(weight, 1), per_row


def census_tables(g: acs2018._Geo) -> dict[str, np.ndarray]:
    out = {}
    edu = []
    for row in (28, 34, 37, 40, 43, 46, 49, 52, 31):  # ROW_NAMES order
        pop, hs, ba = g.s("S1501", 1, [row, row + 1, row + 2])
        edu.append([pop - hs, hs - ba, ba])
    out["education x race"] = np.array(edu)
    race_vet = list(range(14, 21)) + [21, 22]
    out["veteran x race"] = np.stack([g.s("S2101", 3, race_vet), g.s("S2101", 5, race_vet)], axis=1)
    out["veteran x education"] = np.stack([g.s("S2101", 3, range(27, 31)), g.s("S2101", 5, range(27, 31))], axis=1)
    emp_rows = list(range(12, 21))
    out["employment x race"] = acs2018._emp_from_rates(*(g.s("S2301", c, emp_rows) for c in (1, 2, 3, 4)))
    mar_rows = list(range(18, 27))
    total = g.s("S1201", 1, mar_rows)
    cols = [acs2018.S1201_MARITAL_COLS.get(m) for m in vocab.MARITAL]
    out["marital x race"] = np.stack([total * g.s("S1201", c, mar_rows) / 100 for c in cols], axis=1)
    return out


def measure(geo: str, n: int, seed: int, root: str | None) -> dict:
    start = time.perf_counter()
    spec = acs2018.geo_spec(geo, root=root)
    fitted = model.fit(spec)
    fit_s = time.perf_counter() - start
    codes = model.sample(fitted, n, np.random.default_rng(seed))
    census = census_tables(acs2018._Geo(geo, root))
    rows = race_rows(codes)
    age = codes["age"]
    civilian = codes["employment_status"] != vocab.EMPLOYMENT.index("Armed Forces")
    adults25 = age >= 25
    everyone = np.ones(n, dtype=bool)
    vet = codes["veteran"].astype(np.int64)
    edu_rows = [EDU4[codes["education"]] == e for e in range(4)]
    out = {"fit_s": fit_s}
    emp, mar = codes["employment_status"].astype(np.int64), codes["marital_status"].astype(np.int64)
    specs = {
        "education x race": (rows, EDU3[codes["education"]], adults25),
        "veteran x race": (rows, vet, civilian),
        "veteran x education": (edu_rows, vet, civilian & adults25),
        "employment x race": (rows, emp, everyone),
        "marital x race": (rows, mar, everyone),
    }
    for name, (groups, value, universe) in specs.items():
        out[name] = row_tvd(groups, value, universe, census[name])
        partition = len(vocab.RACE) if groups is rows else len(groups)
        out[f"{name} joint"] = joint_tvd(groups[:partition], value, universe, census[name][:partition])
    out["median age"] = [float(np.median(age[m])) if m.any() else float("nan") for m in rows]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--states", nargs="+", default=["CA", "GA", "NY"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--census-dir", default=None, help="a fetched folder in the ACS 2018 layout")
    args = parser.parse_args()
    tables = ["education x race", "veteran x race", "veteran x education", "employment x race", "marital x race"]
    results = {geo: measure(geo, args.persons, args.seed, args.census_dir) for geo in args.states}
    print_table(
        f"TVD of the joint (group x attribute), sample vs census ({args.persons:,} persons a state, seed {args.seed})",
        ["table", *args.states],
        [[t, *(f"{results[g][f'{t} joint']:.4f}" for g in args.states)] for t in tables],
    )
    print_table(
        "TVD given the group (nine overlapping race rows or four education rows, weighted by persons)",
        ["table", *args.states],
        [[t, *(f"{results[g][t][0]:.4f}" for g in args.states)] for t in tables],
    )
    detail = []
    for geo in args.states:
        per_row = results[geo]["education x race"][1]
        vets = results[geo]["veteran x race"][1]
        for i in (1, 3, 0, 7):
            if per_row[i] is None or vets[i] is None:
                continue
            detail.append(
                [
                    f"{geo} {ROW_NAMES[i]}",
                    f"{per_row[i][0][2]:.3f} / {per_row[i][1][2]:.3f}",
                    f"{vets[i][0][0]:.3f} / {vets[i][1][0]:.3f}",
                    f"{results[geo]['median age'][i]:.0f}",
                ]
            )
        lowest = results[geo]["veteran x education"][1][0]
        detail.append([f"{geo} less than high school", "", f"{lowest[0][0]:.3f} / {lowest[1][0]:.3f}", ""])
    print_table(
        "Details (sample / census)",
        ["group (25+ for education)", "bachelor's or higher", "veteran share", "median age (sample)"],
        detail,
    )
    fits = ", ".join(f"{g} {results[g]['fit_s']:.1f} s" for g in args.states)
    print(f"\nfit time per state (tables read + IPF): {fits}")


if __name__ == "__main__":
    main()
