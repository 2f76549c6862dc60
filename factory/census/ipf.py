"""Iterative proportional fitting of a dense joint table against any number of (coarsened, partial) margins.

A `Margin` constrains the joint through maps from each fine dimension's categories to the margin's categories
(`-1` = outside the margin's universe, e.g. ages under 25 for an education table of the 25+). Each map is one
numpy array, so a margin can coarsen (5-year ages -> the table's bands), restrict (a universe) and cross any
subset of dimensions. A margin is either `count` (fixes the mass of each of its cells, e.g. age x sex) or
`share`: it then fixes the distribution of its other dimensions *given* its `given` dimensions (marital status
given age and sex, from S1201), leaving the distribution of the given dimensions to the tables that own it.
Tables from different universes or samples (15+ vs 18+, civilians, rounded percents) then never fight over
totals they do not measure.

Each IPF step is one `bincount` and one gather-multiply over the cells inside the margin's universe, so a sweep
costs O(cells x margins). Zeros in the seed stay zero: impossible combinations are excluded structurally.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Margin:
    name: str
    dims: tuple[str, ...]
    maps: dict[str, np.ndarray]  # fine dim -> target category per fine category (-1 = outside universe)
    table: np.ndarray  # counts (or shares) with one axis per dim, in `dims` order
    mode: str = "share"  # "share" | "count"
    given: tuple[str, ...] = ()  # share mode: dims whose distribution this margin does not impose
    labels: dict[str, list[str]] = field(default_factory=dict)  # category names per dim (reports)

    def given_index(self) -> np.ndarray:
        """Margin cell -> its cell of the `given` dims (0 everywhere when nothing is given)."""
        shape = self.table.shape
        grid = np.indices(shape).reshape(len(shape), -1)
        out = np.zeros(grid.shape[1], dtype=np.int64)
        for d in self.given:
            axis = self.dims.index(d)
            out = out * shape[axis] + grid[axis]
        return out

    def conditional(self) -> np.ndarray:
        """The table as shares within each cell of the given dims (flat), NaN-free."""
        goal = np.asarray(self.table, dtype=np.float64).ravel()
        g = self.given_index()
        totals = np.bincount(g, weights=goal)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(totals[g] > 0, goal / totals[g], 0.0)


@dataclass
class FitResult:
    joint: np.ndarray  # shape = sizes of dims, float64
    iterations: int
    max_error: float  # largest total-variation gap (within a margin's universe) at the last sweep
    errors: dict[str, float]


def margin_index(dims: list[str], sizes: list[int], margin: Margin) -> tuple[np.ndarray, np.ndarray]:
    """Flat joint positions inside the margin's universe and the margin cell each one falls into."""
    flat = np.zeros(sizes, dtype=np.int64)
    inside = np.ones(sizes, dtype=bool)
    stride = 1
    for d in reversed(margin.dims):
        axis = dims.index(d)
        m = np.asarray(margin.maps[d], dtype=np.int64)
        if len(m) != sizes[axis]:
            raise ValueError(f"margin {margin.name}: map of {d} has {len(m)} entries, dimension has {sizes[axis]}")
        n_cats = margin.table.shape[margin.dims.index(d)]
        if m.max() != n_cats - 1:
            raise ValueError(f"margin {margin.name}: {d} maps onto {m.max() + 1} categories, table has {n_cats}")
        shape = [1] * len(sizes)
        shape[axis] = sizes[axis]
        m = m.reshape(shape)
        flat = flat + np.where(m >= 0, m, 0) * stride
        inside &= m >= 0
        stride *= margin.table.shape[margin.dims.index(d)]
    pos = np.flatnonzero(inside.ravel())
    return pos, flat.ravel()[pos]


def ipf(
    dims: list[str],
    sizes: list[int],
    margins: list[Margin],
    seed: np.ndarray | None = None,
    tol: float = 1e-6,
    max_iter: int = 500,
) -> FitResult:
    """Fit the joint; stop when every margin's share error is below `tol` (or after `max_iter` sweeps)."""
    joint = (
        np.ones(int(np.prod(sizes)), dtype=np.float64)
        if seed is None
        else np.asarray(seed, dtype=np.float64).ravel().copy()
    )
    prepared = []
    # count margins last in each sweep: the fitted joint then matches them exactly, and whatever the other
    # (conditional) tables cannot all agree on shows up as their residual error instead
    for m in sorted(margins, key=lambda m: m.mode == "count"):
        if not np.isfinite(m.table).all() or (np.asarray(m.table) < 0).any():
            raise ValueError(f"margin {m.name}: counts must be finite and non-negative")
        pos, idx = margin_index(dims, sizes, m)
        goal = np.asarray(m.table, dtype=np.float64).ravel()
        prepared.append((m, pos, idx, goal, m.given_index(), m.conditional()))
    if seed is None:  # a uniform seed has the total of the first count margin
        total = next((float(p[3].sum()) for p in prepared if p[0].mode == "count"), 1.0)
        joint *= total / joint.sum()

    errors: dict[str, float] = {}
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is reported)
        worst = 0.0
        for m, pos, idx, goal, given, cond in prepared:
            current = np.bincount(idx, weights=joint[pos], minlength=goal.size)
            mass = current.sum()
            if mass <= 0:
                continue
            if m.mode == "count":
                target = goal
            else:
                target = cond * np.bincount(given, weights=current)[given]
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(current > 0, target / current, 1.0)
            joint[pos] *= factor[idx]
            worst = max(worst, float(np.abs(current - target).sum() / mass / 2))  # TV within the universe
        if worst < tol:
            break
    for m, pos, idx, goal, given, cond in prepared:  # residuals of the final joint
        current = np.bincount(idx, weights=joint[pos], minlength=goal.size)
        mass = current.sum()
        target = goal if m.mode == "count" else cond * np.bincount(given, weights=current)[given]
        errors[m.name] = float(np.abs(current - target).sum() / mass / 2) if mass > 0 else 0.0
    return FitResult(joint.reshape(sizes), it, max(errors.values(), default=0.0), errors)


def margin_of(joint: np.ndarray, dims: list[str], margin: Margin) -> np.ndarray:
    """The joint's table in the margin's categories (for fidelity reports)."""
    pos, idx = margin_index(dims, list(joint.shape), margin)
    return np.bincount(idx, weights=joint.ravel()[pos], minlength=margin.table.size).reshape(margin.table.shape)


def systematic_sample(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n flat cell indices with each cell's count within one of n x its share (then shuffled).

    Systematic sampling: one uniform offset, n equally spaced points through the cumulative distribution. Every
    margin of the sample then sits within rounding of the fitted joint instead of carrying multinomial noise.
    """
    p = np.asarray(weights, dtype=np.float64).ravel()
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    points = (rng.random() + np.arange(n)) / n
    cells = np.searchsorted(cdf, points, side="right")
    np.minimum(cells, p.size - 1, out=cells)
    return cells[rng.permutation(n)]


def sample_conditional(cdf: np.ndarray, parent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw a child category per person from `cdf[parent]` (rows: parent cells, columns: cumulative shares)."""
    u = rng.random(parent.shape[0])
    rows = cdf[parent]
    return (u[:, None] >= rows[:, :-1]).sum(axis=1).astype(np.int16)
