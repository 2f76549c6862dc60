"""Bootstrap intervals: persons resampled within each geography, the same resamples for every figure (paired).

One draw of the bootstrap is a multinomial count per person (how often the resample takes them), drawn geography
by geography from a seeded generator, so every state keeps its own number of persons, as the design that sampled
them did. Every style, model, question and weighting is scored on the same draws: a person's answers travel
together, and the difference of two styles in a draw is a paired difference. A figure's interval is the
percentile interval of its value over the draws (`interval`); figures that do not depend on the simulated
persons (real results, baselines built from them) have none.

Cost: for each question, the counts of the persons who answered it (draws x persons) are multiplied by their
summed weighted answer vectors (persons x groups x options), a chunk of persons at a time; everything after is
arithmetic on draws x states or draws x options arrays (`bench/bootstrap.py` times it).
"""

from __future__ import annotations

import numpy as np

CHUNK_CELLS = 1 << 22  # draws x persons counts gathered at once (float32: 16 MiB)


def person_counts(geographies: np.ndarray, draws: int, rng_for) -> np.ndarray:
    """draws x persons resample counts (uint16), persons resampled with replacement within their geography.

    `geographies[i]` is person i's geography; `rng_for(geo)` gives the generator of one geography, so a
    state's draws do not depend on which other states are in the data."""
    counts = np.zeros((draws, len(geographies)), dtype=np.uint16)
    if draws == 0:
        return counts
    for geo in sorted(set(geographies.tolist())):
        members = np.flatnonzero(geographies == geo)
        n = len(members)
        picks = rng_for(geo).integers(0, n, size=(draws, n))  # n persons drawn with replacement, per draw
        counts[:, members] = np.bincount((picks + np.arange(draws)[:, None] * n).ravel(), minlength=draws * n).reshape(
            draws, n
        )
    return counts


def replicate_sums(
    counts: np.ndarray,
    person: np.ndarray,
    weight: np.ndarray,
    vectors: np.ndarray,
    codes: np.ndarray,
    groups: int,
    block: np.ndarray | None = None,
) -> np.ndarray:
    """draws x groups x (k + 1): per draw and group, the weighted sums of the rows' k-option vectors and, last,
    the sum of their weights. Rows with code -1 are left out (invalid answers, people in no group).

    Rows are summed per person first (a person's answers in several styles share one count), then one matrix
    product per chunk of persons gives every draw: counts (draws x persons) @ (persons x groups x (k + 1)). A chunk
    holds the groups of its rows only; `block` (a code per row, e.g. the geography, that every group lies within)
    keeps chunks inside one block, so a chunk of one state never carries the other states' groups as zeros."""
    draws, k = counts.shape[0], vectors.shape[1]
    out = np.zeros((draws, groups, k + 1))
    rows = np.flatnonzero(codes >= 0)
    if draws == 0 or len(rows) == 0:
        return out
    blocks = np.zeros(len(codes), dtype=np.int64) if block is None else np.asarray(block, dtype=np.int64)
    rows = rows[np.lexsort((codes[rows], person[rows], blocks[rows]))]
    values = np.concatenate([vectors, np.ones((len(vectors), 1))], axis=1) * np.asarray(weight)[:, None]
    p, b = person[rows], blocks[rows]
    new_block = np.r_[True, b[1:] != b[:-1]]
    rank = np.cumsum(np.r_[True, (p[1:] != p[:-1]) | ~new_block[1:]]) - 1  # person number along the rows
    first = rank[np.flatnonzero(new_block)][np.cumsum(new_block) - 1]  # the number of the block's first person
    chunk = (np.cumsum(new_block) - 1) * len(rows) + (rank - first) // max(1, CHUNK_CELLS // draws)
    bounds = np.r_[np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1]]), len(rows)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = rows[lo:hi]
        persons, at_person = np.unique(person[part], return_inverse=True)
        local, at_group = np.unique(codes[part], return_inverse=True)
        width = len(local) * (k + 1)
        cells = (at_person * width + at_group * (k + 1))[:, None] + np.arange(k + 1)
        summed = np.bincount(cells.ravel(), weights=values[part].ravel(), minlength=len(persons) * width)
        got = counts[:, persons].astype(np.float32) @ summed.reshape(len(persons), width).astype(np.float32)
        out[:, local, :] += got.reshape(draws, len(local), k + 1)
    return out


def interval(draws: np.ndarray | None, level: float) -> tuple[float | None, float | None]:
    """Percentile interval of one figure's bootstrap draws (draws where it is undefined, NaN, are left out)."""
    if draws is None:
        return None, None
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return None, None
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(draws, [tail, 1.0 - tail])
    return float(lo), float(hi)


def shares_of(sums: np.ndarray) -> np.ndarray:
    """draws x ... x k shares from `replicate_sums` output (NaN where a draw has no weight in the group)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[..., :-1] / sums[..., -1:]
