"""Pure evaluation functions: answer vectors and weighted shares, election metrics, OpinionQA alignment, groups.

Answer vectors: every answer row is a probability vector over the question's ORIGINAL options: one-hot at
`choice` for sampled modes, the row's `distribution` for `logprob` mode. Invalid rows (and rows that claim to
be valid but carry no usable choice or distribution) contribute no vector; they are counted apart.
Shares of a group are the weighted mean of its valid vectors (`group_sums` then `shares`).

Elections: the simulated two-party Democratic share of a state is D / (D + R) over the state's shares; options
that are neither candidate are left out of it. Winners, electoral votes and national shares: `state_rows`,
`summary`.

OpinionQA alignment (Santurkar et al. 2023, "Whose Opinions Do Language Models Reflect?"):
    alignment = 1 - W1(p, q) / (max ordinal - min ordinal)
on the options' ordinal positions, which for positions 1..N is the paper's 1 - W1 / (N - 1), and is what the
paper's code computes for the few questions whose positions are not 1..N (a middle option at 1.5). The refusal
option (`refusal_index`) and options without an ordinal position ("Not sure") are dropped from BOTH
distributions and the rest renormalised, as the paper does; total variation (tv) is computed on the same
renormalised support so the two numbers describe the same comparison. A side with no mass left gives null
alignment and tv; a question whose kept positions are all equal (nominal, W1 always 0) gives null alignment.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from factory.errors import DataError

# ---------------------------------------------------------------------------------------------------------------
# answer vectors and weighted shares


def probability_vectors(
    choice: np.ndarray, distribution: list, valid: np.ndarray, logprob: np.ndarray, k: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """(n x k vectors, usable mask). `choice` holds -1 for null; `distribution` a list of sequences or None.

    A valid sampled row without a choice, or a valid logprob row without a distribution (or with no mass), is
    not usable: it counts as invalid. A choice outside the options or a distribution of the wrong length is a
    broken answers dataset, not a bad answer, so it raises.
    """
    n = len(valid)
    out = np.zeros((n, k))
    ok = np.asarray(valid, dtype=bool).copy()
    logprob = np.asarray(logprob, dtype=bool)
    choice = np.asarray(choice, dtype=np.int64)

    sampled = np.flatnonzero(ok & ~logprob)
    picked = choice[sampled]
    ok[sampled[picked < 0]] = False
    sampled, picked = sampled[picked >= 0], picked[picked >= 0]
    if (picked >= k).any():
        raise DataError(f"answers: {what}: choice {int(picked.max())} but the question has {k} options")
    out[sampled, picked] = 1.0

    rows = np.flatnonzero(ok & logprob)
    given = np.array([distribution[i] is not None for i in rows], dtype=bool)
    ok[rows[~given]] = False
    rows = rows[given]
    if len(rows):
        lengths = np.array([len(distribution[i]) for i in rows])
        if (lengths != k).any():
            raise DataError(f"answers: {what}: a distribution of {lengths[lengths != k][0]} values for {k} options")
        d = np.array([distribution[i] for i in rows], dtype=np.float64).reshape(len(rows), k)
        total = d.sum(axis=1)
        good = np.isfinite(total) & (total > 0) & ~(d < 0).any(axis=1)
        ok[rows[~good]] = False
        # float32 sums drift from 1 by ~1e-7; renormalise so shares sum to 1 exactly
        out[rows[good]] = d[good] / total[good, None]
    return out, ok


def group_sums(
    vectors: np.ndarray, ok: np.ndarray, weight: np.ndarray, codes: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per group (codes 0..n_groups-1, -1 = in no group): valid count, invalid count, weight sum, weighted sums."""
    member = codes >= 0
    n_valid = np.bincount(codes[member & ok], minlength=n_groups)
    n_invalid = np.bincount(codes[member & ~ok], minlength=n_groups)
    use = member & ok
    w = np.asarray(weight, dtype=np.float64)[use]
    wsum = np.bincount(codes[use], weights=w, minlength=n_groups)
    sums = np.stack(
        [np.bincount(codes[use], weights=w * vectors[use, j], minlength=n_groups) for j in range(vectors.shape[1])],
        axis=1,
    ).reshape(n_groups, vectors.shape[1])
    return n_valid, n_invalid, wsum, sums


def shares(wsum: float, sums: np.ndarray) -> list[float] | None:
    """Weighted mean vector, or None when the group has no valid row (or only zero weights)."""
    return None if wsum <= 0 else [float(v) for v in sums / wsum]


# ---------------------------------------------------------------------------------------------------------------
# elections

# Electoral votes per state, from the apportionment of the House after each census (electors = representatives
# + 2 senators; DC 3 under the 23rd Amendment). Sources: U.S. Census Bureau, "Apportionment of the U.S. House of
# Representatives", 2010 and 2020 Census apportionment results; National Archives, "Distribution of Electoral
# Votes". The 2010 apportionment applies to the 2012-2020 elections, the 2020 one to 2024-2028.
# Maine and Nebraska split their electors by congressional district; the results file has statewide totals only,
# so both simulated and real totals here give a state's electors all to its statewide winner (winner-take-all),
# which compares like for like (real 2016/2020/2024 Democratic totals come out 233/306/226 instead of the
# certified 232 pledged/306/226).
EV_2010 = {
    "AL": 9, "AK": 3, "AZ": 11, "AR": 6, "CA": 55, "CO": 9, "CT": 7, "DE": 3, "DC": 3, "FL": 29, "GA": 16,
    "HI": 4, "ID": 4, "IL": 20, "IN": 11, "IA": 6, "KS": 6, "KY": 8, "LA": 8, "ME": 4, "MD": 10, "MA": 11,
    "MI": 16, "MN": 10, "MS": 6, "MO": 10, "MT": 3, "NE": 5, "NV": 6, "NH": 4, "NJ": 14, "NM": 5, "NY": 29,
    "NC": 15, "ND": 3, "OH": 18, "OK": 7, "OR": 7, "PA": 20, "RI": 4, "SC": 9, "SD": 3, "TN": 11, "TX": 38,
    "UT": 6, "VT": 3, "VA": 13, "WA": 12, "WV": 5, "WI": 10, "WY": 3,
}  # fmt: skip
# 2020 census: TX +2; CO, FL, MT, NC, OR +1; CA, IL, MI, NY, OH, PA, WV -1.
EV_2020 = {
    **EV_2010,
    **{"TX": 40, "CO": 10, "FL": 30, "MT": 4, "NC": 16, "OR": 8},
    **{"CA": 54, "IL": 19, "MI": 15, "NY": 28, "OH": 17, "PA": 19, "WV": 4},
}
ELECTORAL_VOTES = {2016: EV_2010, 2020: EV_2010, 2024: EV_2020}
YEARS = tuple(ELECTORAL_VOTES)
RESULTS_FILE = ("elections", "us_president_by_state_2016_2020_2024.csv")


def load_results():
    """The shipped state results (MIT Election Lab), one row per year x state."""
    import pandas as pd

    from factory.resources import data_path

    return pd.read_csv(data_path(*RESULTS_FILE), dtype={"state_fips": str})


def election_year(text: str, years: tuple[int, ...] | list[int] = YEARS) -> int | None:
    """The one election year among `years` named in a question's text, else None (none, or several)."""
    found = {int(y) for y in re.findall(r"\b(\d{4})\b", text)} & set(years)
    return found.pop() if len(found) == 1 else None


def surname(results_name: str) -> str:
    """'Clinton, Hillary' -> 'clinton'; the results file writes candidates as 'Last, First Middle'."""
    return results_name.split(",")[0].strip().casefold()


def candidate_option(options: list[str], results_name: str) -> int | None:
    """Index of the one option naming this candidate's surname as a word ('Hillary Clinton'), else None."""
    pattern = re.compile(rf"\b{re.escape(surname(results_name))}\b")
    hits = [i for i, o in enumerate(options) if pattern.search(o.casefold())]
    return hits[0] if len(hits) == 1 else None


def two_party_share(vector: list[float] | None, dem: int, rep: int) -> float | None:
    if vector is None:
        return None
    d, r = vector[dem], vector[rep]
    return None if d + r <= 0 else d / (d + r)


def winner(dem_share: float) -> str:
    """'D', 'R', or 'tie' (a tie wins no electors and never matches the real winner)."""
    return "D" if dem_share > 0.5 else "R" if dem_share < 0.5 else "tie"


def state_row(state: str, sim_dem_share: float, real: dict, year: int) -> dict[str, Any]:
    """One simulated state against its real result (`real`: a results-file row as a dict)."""
    return {
        "state": state,
        "sim_dem_share": sim_dem_share,
        "real_dem_share": float(real["dem_two_party_share"]),
        "error": sim_dem_share - float(real["dem_two_party_share"]),
        "sim_winner": winner(sim_dem_share),
        "real_winner": str(real["winner"]),
        "electoral_votes": ELECTORAL_VOTES[year][state],
    }


def summary(states: list[dict], total_votes: dict[str, float]) -> dict[str, Any]:
    """Metrics over the simulated states of one election (rows from `state_row`).

    National shares weight each state's two-party share by its real total votes, for the simulation and the
    real results alike, over the same states, so the two are comparable whatever subset was simulated.
    `signed_bias` is the unweighted mean of sim - real across states: positive leans toward the Democrat.
    """
    if not states:
        raise ValueError("no states to summarise")
    err = np.array([s["error"] for s in states])
    tv = np.array([total_votes[s["state"]] for s in states], dtype=np.float64)
    sim = np.array([s["sim_dem_share"] for s in states])
    real = np.array([s["real_dem_share"] for s in states])
    bias = float(err.mean())
    return {
        "states": len(states),
        "mae_state_share": float(np.abs(err).mean()),
        "winner_accuracy": float(np.mean([s["sim_winner"] == s["real_winner"] for s in states])),
        "sim_electoral_votes_dem": sum(s["electoral_votes"] for s in states if s["sim_winner"] == "D"),
        "real_electoral_votes_dem": sum(s["electoral_votes"] for s in states if s["real_winner"] == "D"),
        "electoral_votes_total": sum(s["electoral_votes"] for s in states),
        "sim_national_dem_share": float((tv * sim).sum() / tv.sum()),
        "real_national_dem_share": float((tv * real).sum() / tv.sum()),
        "signed_bias": bias,
        "bias_toward": "D" if bias > 0 else "R" if bias < 0 else None,
    }


# ---------------------------------------------------------------------------------------------------------------
# OpinionQA alignment


def wasserstein_1d(positions: np.ndarray, p: np.ndarray, q: np.ndarray) -> float:
    """W1 between two distributions on the same points: the area between their CDFs (as scipy computes it)."""
    order = np.argsort(positions, kind="stable")
    x = np.asarray(positions, dtype=np.float64)[order]
    gap = np.abs(np.cumsum(np.asarray(p)[order]) - np.cumsum(np.asarray(q)[order]))
    return float((gap[:-1] * np.diff(x)).sum())


def ordinal_support(ordinal: list[float | None], refusal_index: int | None) -> np.ndarray:
    """Indices of the options that enter the comparison: those with an ordinal position, never the refusal."""
    return np.array(
        [i for i, o in enumerate(ordinal) if o is not None and not np.isnan(o) and i != refusal_index], dtype=int
    )


def compare(
    sim: list[float] | np.ndarray,
    human: list[float] | np.ndarray,
    ordinal: list[float | None],
    refusal_index: int | None,
) -> tuple[float | None, float | None]:
    """(alignment, tv) of a simulated against a human distribution over the same options; see the module doc."""
    keep = ordinal_support(ordinal, refusal_index)
    if len(keep) == 0:
        return None, None
    p = np.asarray(sim, dtype=np.float64)[keep]
    q = np.asarray(human, dtype=np.float64)[keep]
    if p.sum() <= 0 or q.sum() <= 0:
        return None, None
    p, q = p / p.sum(), q / q.sum()
    tv = float(0.5 * np.abs(p - q).sum())
    positions = np.array([ordinal[i] for i in keep], dtype=np.float64)
    span = positions.max() - positions.min()
    if span <= 0:
        return None, tv
    return float(1.0 - wasserstein_1d(positions, p, q) / span), tv


# ---------------------------------------------------------------------------------------------------------------
# meta persona -> OpinionQA (Pew ATP) groups

AGE_GROUPS = ((18, 29, "18-29"), (30, 49, "30-49"), (50, 64, "50-64"), (65, 200, "65+"))
CENSUS_REGIONS = {
    "Northeast": "CT ME MA NH RI VT NJ NY PA",
    "Midwest": "IL IN MI OH WI IA KS MN MO NE ND SD",
    "South": "DE DC FL GA MD NC SC VA WV AL KY MS TN AR LA OK TX",
    "West": "AZ CO ID MT NV NM UT WY AK CA HI OR WA",
}
# ACS categories -> Pew's. Where an ACS band straddles a Pew boundary it maps to nothing: a person in it joins
# no group of that attribute rather than the wrong one.
PEW_GROUPS: dict[str, dict[str, str]] = {
    "SEX": {"Male": "Male", "Female": "Female"},
    "CREGION": {state: region for region, states in CENSUS_REGIONS.items() for state in states.split()},
    "EDUCATION": {
        "Less than 9th grade": "Less than high school",
        "9th to 12th grade, no diploma": "Less than high school",
        "High school graduate (includes equivalency)": "High school graduate",
        "Some college, no degree": "Some college, no degree",
        "Associate's degree": "Associate's degree",
        # Pew's group also holds people with some graduate school but no graduate degree: ACS counts them here too
        "Bachelor's degree": "College graduate/some postgrad",
        "Graduate or professional degree": "Postgraduate",
    },
    # race_ethnicity is exclusive (Hispanic of any race, else a non-Hispanic race), like Pew's groups. Pew reports
    # "Mixed Race" apart from "Other", so two or more races go there rather than into Other.
    "RACE": {
        "Hispanic or Latino": "Hispanic",
        "White": "White",
        "Black or African American": "Black",
        "Asian": "Asian",
        "American Indian and Alaska Native": "Other",
        "Native Hawaiian and Other Pacific Islander": "Other",
        "Some other race": "Other",
        "Two or more races": "Mixed Race",
    },
    "CITIZEN": {"U.S. citizen by birth": "Yes", "Naturalized U.S. citizen": "Yes", "Not a U.S. citizen": "No"},
    "MARITAL": {
        "Now married, except separated": "Married",
        "Divorced": "Divorced",
        "Separated": "Separated",
        "Widowed": "Widowed",
        "Never married": "Never been married",
    },
    # household income: "$25,000 to $34,999" straddles Pew's $30,000 boundary and is dropped; "None" (group
    # quarters, no household) has no Pew counterpart.
    "INCOME": {
        "Less than $10,000": "Less than $30,000",
        "$10,000 to $14,999": "Less than $30,000",
        "$15,000 to $24,999": "Less than $30,000",
        "$35,000 to $49,999": "$30,000-$50,000",
        "$50,000 to $74,999": "$50,000-$75,000",
        "$75,000 to $99,999": "$75,000-$100,000",
        "$100,000 to $149,999": "$100,000 or more",
        "$150,000 to $199,999": "$100,000 or more",
        "$200,000 or more": "$100,000 or more",
    },
}
# the meta-persona column each attribute is read from
PEOPLE_COLUMN = {
    "AGE": "age",
    "SEX": "sex",
    "EDUCATION": "education",
    "CREGION": "geography",
    "RACE": "race_ethnicity",
    "CITIZEN": "citizenship",
    "MARITAL": "marital_status",
    "INCOME": "household_income",
}
GROUP_ATTRIBUTES = tuple(PEOPLE_COLUMN)


def pew_group(attribute: str, values: list) -> list[str | None]:
    """Pew group of each person for one attribute (None where the persona maps to no group)."""
    if attribute == "AGE":
        return [
            None if a is None or a != a else next((g for lo, hi, g in AGE_GROUPS if lo <= int(a) <= hi), None)
            for a in values
        ]
    table = PEW_GROUPS[attribute]
    return [table.get(v) for v in values]


def compare_many(
    sim: np.ndarray, human: list[float] | np.ndarray, ordinal: list[float | None], refusal_index: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """`compare` for many simulated distributions at once (rows of `sim`, e.g. bootstrap draws): (alignment, tv)
    arrays, NaN where `compare` gives null."""
    sim = np.atleast_2d(np.asarray(sim, dtype=np.float64))
    nan = np.full(len(sim), np.nan)
    keep = ordinal_support(ordinal, refusal_index)
    if len(keep) == 0:
        return nan, nan.copy()
    q = np.asarray(human, dtype=np.float64)[keep]
    if q.sum() <= 0:
        return nan, nan.copy()
    q = q / q.sum()
    p = sim[:, keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = p / p.sum(axis=1, keepdims=True)  # rows without mass (or NaN draws) become NaN and stay NaN
    tv = 0.5 * np.abs(p - q).sum(axis=1)
    positions = np.array([ordinal[i] for i in keep], dtype=np.float64)
    span = positions.max() - positions.min()
    if span <= 0:
        return nan, tv
    order = np.argsort(positions, kind="stable")
    gap = np.abs(np.cumsum(p[:, order], axis=1) - np.cumsum(q[order]))
    w1 = (gap[:, :-1] * np.diff(positions[order])).sum(axis=1)
    return 1.0 - w1 / span, tv


def summary_draws(
    shares: np.ndarray, real: np.ndarray, real_winners: list[str], votes: np.ndarray, electors: np.ndarray
) -> dict[str, np.ndarray]:
    """`summary`'s figures for draws x states simulated shares (NaN: a state without valid answers in a draw,
    left out of that draw's figures): mae_state_share, winner_accuracy, sim_electoral_votes_dem,
    sim_national_dem_share, signed_bias, each an array over draws."""
    shares = np.atleast_2d(shares)
    have = np.isfinite(shares)
    err = shares - real
    won = np.where(shares > 0.5, "D", np.where(shares < 0.5, "R", "tie"))
    right = (won == np.asarray(real_winners)) & have
    with np.errstate(invalid="ignore", divide="ignore"):
        n = have.sum(axis=1).astype(np.float64)
        n[n == 0] = np.nan
        v = np.where(have, votes, 0.0)
        return {
            "mae_state_share": np.where(have, np.abs(err), 0.0).sum(axis=1) / n,
            "winner_accuracy": right.sum(axis=1) / n,
            "sim_electoral_votes_dem": ((shares > 0.5) * electors).sum(axis=1).astype(np.float64),
            "sim_national_dem_share": (v * np.where(have, shares, 0.0)).sum(axis=1) / v.sum(axis=1),
            "signed_bias": np.where(have, err, 0.0).sum(axis=1) / n,
        }


def spread_of(rows: list[dict], keys: list[str]) -> list[dict]:
    """Per distinct `keys`, the spread of the rows' `value` across replicates: count, mean, sample standard
    deviation (None for one), min and max."""
    import pandas as pd

    out: list[dict] = []
    if not rows:
        return out
    for key, g in pd.DataFrame(rows).groupby(keys, sort=True):
        v = g["value"].to_numpy(dtype=np.float64)
        sd = float(v.std(ddof=1)) if len(v) > 1 else None
        stats = {"replicates": len(v), "mean": float(v.mean()), "sd": sd, "min": float(v.min()), "max": float(v.max())}
        out.append(dict(zip(keys, key)) | stats)
    return out
