"""Raking (iterative proportional fitting on person weights) and the census margins it rakes to.

`rake` is classic raking: start from the design weights, multiply every person's weight by the ratio target /
current of their category, one margin after the other, until every category of every margin is within `tol`
(relative) of its target. It is the update of `factory.census.ipf.ipf` on a one-dimensional "person" axis, plus
optional trimming of the weight ratios, which `ipf` (a dense joint) has no use for.

`census_margin` gives the population count of each category of a meta-persona column from a fitted geography
(`factory.census.model.FittedGeo`): core attributes from the core joint, conditional ones from their block joint,
derived columns (race alone, nativity, language, English ability) mapped from the attribute they are drawn from.
Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.census import vocab

# dataset column -> (fitted attribute, map from the attribute's categories to the column's, or None for identity)
_LANGUAGE_OF = np.array([0] + [1 + i // 2 for i in range(8)])  # same as persons.LANGUAGE_OF
_ENGLISH_OF = np.array([0] + [1, 2] * 4)
_DERIVED: dict[str, tuple[str, np.ndarray | None]] = {
    "citizenship": ("nativity", None),
    "nativity": ("nativity", np.array([0, 1, 1])),  # native / foreign born (naturalized or not a citizen)
    "veteran_status": ("veteran", None),
    "language": ("language", _LANGUAGE_OF),
    "english_ability": ("language", _ENGLISH_OF),
}
BLOCK_COLUMNS = (
    "school_enrollment",
    "relationship",
    "household_type",
    "occupation",
    "industry",
    "class_of_worker",
    "household_income",
    "health_insurance",
)
# the core's 3-way `nativity` is the `citizenship` column; the `nativity` column is its native/foreign-born view
RAKEABLE = tuple(dict.fromkeys([*vocab.CORE_DIMS, "race", *BLOCK_COLUMNS, *_DERIVED]))


@dataclass
class RakeResult:
    weights: np.ndarray
    iterations: int
    converged: bool
    max_error: float  # largest relative gap |current - target| / target over categories that can be matched


def _attribute_margin(fitted, name: str) -> np.ndarray:
    if name in vocab.CORE_DIMS:
        axis = list(vocab.CORE_DIMS).index(name)
        return fitted.core.sum(axis=tuple(i for i in range(fitted.core.ndim) if i != axis))
    dims, joint = fitted.blocks[name]
    return joint.reshape(-1, joint.shape[-1]).sum(axis=0)  # the block's attribute is its last axis


def census_margin(fitted, column: str) -> np.ndarray:
    """Population count of each category of `column` (in the meta-persona ClassLabel order) for one geography."""
    if column == "race":  # non-Hispanic groups are their race; Hispanic people follow the Hispanic-by-race mix
        eth = _attribute_margin(fitted, "race_ethnicity")
        race = np.zeros(len(vocab.RACE))
        race += np.bincount(np.arange(len(eth) - 1), weights=eth[1:], minlength=len(vocab.RACE))
        mix = fitted.spec.hispanic_race
        if mix is None:
            race[0] += eth[0]  # persons.race_alone without a mix: (0 - 1).clip(0) = the first race
        else:
            race += eth[0] * np.asarray(mix, dtype=np.float64) / float(np.sum(mix))
        return race
    if column in _DERIVED:
        name, mapping = _DERIVED[column]
        counts = _attribute_margin(fitted, name)
        if mapping is None:
            return counts
        return np.bincount(mapping, weights=counts, minlength=int(mapping.max()) + 1)
    if column in vocab.CORE_DIMS or column in BLOCK_COLUMNS:
        return _attribute_margin(fitted, column)
    raise KeyError(f"no census margin for column '{column}' (rakeable: {', '.join(RAKEABLE)})")


def tvd(weights: np.ndarray, codes: np.ndarray, target: np.ndarray) -> float:
    """Total-variation distance between the weighted sample's category shares and the target's shares."""
    current = np.bincount(codes, weights=weights, minlength=len(target))
    p = current / current.sum() if current.sum() > 0 else current
    q = target / target.sum() if target.sum() > 0 else target
    return float(np.abs(p - q).sum() / 2)


def rake(
    weights: np.ndarray,
    codes: list[np.ndarray],
    targets: list[np.ndarray],
    tol: float = 1e-6,
    max_iter: int = 200,
    trim: tuple[float, float] | None = None,
) -> RakeResult:
    """Rake `weights` so that the weighted count of each category of each margin matches `targets`.

    `codes[k]` holds each person's category in margin k (0 .. len(targets[k]) - 1). A census category with no
    person in the sample cannot receive weight: its count is spread over the margin's other categories (in
    proportion), so every margin keeps the same total and the fit can converge; the miss stays visible in
    the TVD against the census. `trim=(lo, hi)` bounds each person's final/initial weight ratio after every
    sweep (trimmed raking); the final weights are then rescaled to the target total, so the bounds hold up to
    that last factor and the margins only as closely as the bounds allow.
    """
    w0 = np.asarray(weights, dtype=np.float64)
    w = w0.copy()
    if not codes:
        return RakeResult(w, 0, True, 0.0)
    total = float(np.asarray(targets[0], dtype=np.float64).sum())
    goals = []
    for c, t in zip(codes, targets):
        t = np.asarray(t, dtype=np.float64)
        present = np.bincount(c, weights=w0 > 0, minlength=len(t)) > 0
        reachable = np.where(present, t, 0.0)
        if reachable.sum() > 0:
            reachable *= total / reachable.sum()
        goals.append(reachable)

    def worst() -> float:
        err = 0.0
        for c, g in zip(codes, goals):
            current = np.bincount(c, weights=w, minlength=len(g))
            on = g > 0
            if on.any():
                err = max(err, float(np.max(np.abs(current[on] - g[on]) / g[on])))
        return err

    it, err = 0, worst()
    while err >= tol and it < max_iter:
        it += 1
        for c, g in zip(codes, goals):
            current = np.bincount(c, weights=w, minlength=len(g))
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(current > 0, g / current, 0.0)
            w *= factor[c]
        if trim is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(w0 > 0, w / w0, 0.0)
            w = w0 * np.clip(ratio, trim[0], trim[1])
        err = worst()
    if trim is not None and w.sum() > 0:
        w *= total / w.sum()
        err = worst()
    return RakeResult(w, it, err < tol, err)
