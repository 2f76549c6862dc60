"""A fitted synthetic population for one geography: a core joint plus conditional attributes, and its sampler.

Dependency structure (the same for every source; what a source lacks is filled by its seed, never by
independence):

    core joint (IPF): age band x sex x race/ethnicity x education x marital status x employment x nativity
        against age x sex (count), race/ethnicity (or race x age x sex), education x age x sex, education x race x
        sex, marital x age x sex, marital x race, employment x age, employment x sex, employment x education,
        employment x race, nativity x age / marital / education / employment
    age (single year)       | age band, education      (degrees only at plausible ages)
    race (alone)            | race/ethnicity           (Hispanic people get a race from the Hispanic-by-race mix)
    occupation              | sex, employment          (only the employed have one)
    industry                | sex, employment
    class of worker         | employment, industry     (public administration -> government)
    health insurance        | age group, sex, employment
    veteran status          | age band, sex, employment, race/ethnicity, education  (civilians only)
    language x English      | age band, race/ethnicity, nativity
    relationship            | age band, sex, marital status
    household type          | sex, marital status, relationship
    household income        | household type, relationship
    school enrollment       | age band, education, employment
    Big Five                | age, sex, US-born      (conditional multivariate normal)

Each conditional attribute is itself fitted by IPF: its block joint (parents x attribute) keeps the parents'
distribution from the core and matches every census table that crosses the attribute with any parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from factory.census import vocab
from factory.census.ipf import Margin, ipf, systematic_sample


@dataclass
class Block:
    """One conditional attribute: categories, parents, the census margins that constrain it, a prior."""

    name: str
    categories: list[str]
    parents: list[str]
    margins: list[Margin]
    seed: np.ndarray | None = None  # over parents' sizes + (len(categories),); zeros are structural
    note: str = ""


@dataclass
class GeoSpec:
    """Everything a source says about one geography, ready to fit."""

    geo: str  # short key, e.g. 'NY'
    geo_id: str  # e.g. '0400000US36'
    name: str
    population: float  # persons in the age universe
    core_margins: list[Margin]
    blocks: list[Block]
    core_seed: np.ndarray | None = None
    derived_ages: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    hispanic_race: np.ndarray | None = None  # shares over vocab.RACE for Hispanic people
    min_age: int = 18
    max_age: int = vocab.MAX_AGE
    sources: list[str] = field(default_factory=list)
    seed_margins: list[Margin] = field(default_factory=list)  # tables the core seed was fitted to (acs2023, tidy)


@dataclass
class FittedGeo:
    spec: GeoSpec
    core: np.ndarray  # joint over CORE_DIMS
    blocks: dict[str, tuple[list[str], np.ndarray]]  # name -> (dims, joint)
    conditionals: dict[str, np.ndarray]  # name -> cdf over categories, rows = flat parent cells
    fit_errors: dict[str, float]
    iterations: dict[str, int]


def dim_sizes(spec: GeoSpec, names: list[str]) -> list[int]:
    sizes = []
    for n in names:
        if n in vocab.CORE_DIMS:
            sizes.append(len(vocab.CORE_DIMS[n]))
        elif n in spec.derived_ages:
            sizes.append(len(spec.derived_ages[n]))
        else:
            sizes.append(len(next(b.categories for b in spec.blocks if b.name == n)))
    return sizes


def age_weights(spec: GeoSpec) -> np.ndarray:
    w = vocab.single_year_weights().copy()
    w[: spec.min_age] = 0
    w[spec.max_age + 1 :] = 0
    return w


def universe_factor(spec: GeoSpec) -> np.ndarray:
    """Share of each fine band inside the recipe's age universe (min_age..max_age)."""
    full, w = vocab.single_year_weights(), age_weights(spec)
    return np.array([w[lo : hi + 1].sum() / full[lo : hi + 1].sum() for lo, hi in vocab.AGE_BANDS])


def _parent_distribution(spec: GeoSpec, core: np.ndarray, blocks: dict, parents: list[str]) -> np.ndarray:
    derived = [p for p in parents if p in spec.derived_ages]
    plain = [p for p in parents if p not in spec.derived_ages]
    need = plain + (["age_band"] if derived and "age_band" not in plain else [])
    candidates = [(list(vocab.CORE_DIMS), core)] + list(blocks.values())
    for dims, joint in candidates:
        if all(p in dims for p in need):
            axes = tuple(i for i, d in enumerate(dims) if d not in need)
            marg = joint.sum(axis=axes)
            kept = [d for d in dims if d in need]
            break
    else:
        raise ValueError(f"no fitted joint holds parents {need}")
    for name in derived:  # contract the fine band with the share of its single years in each group
        frac = vocab.age_fraction_matrix(spec.derived_ages[name], age_weights(spec))
        axis = kept.index("age_band")
        marg = np.moveaxis(np.tensordot(marg, frac, axes=([axis], [0])), -1, axis)
        kept[axis] = name
        if "age_band" in parents:
            raise ValueError("a block cannot have both age_band and a derived age group as parents")
    order = [kept.index(p) for p in parents]
    return np.transpose(marg, order)


def joint_constraints(spec: GeoSpec) -> dict[tuple[str, str], list[str]]:
    """Each pair of core attributes -> the census tables that constrain the two jointly.

    A table constrains a pair when it crosses both with at least two categories each and does not take both as
    given (marital status x age x sex *given* age and sex says nothing about age x sex). A pair no table constrains
    is an assumption of the fit: it comes out of the seed and the other tables (conditional independence given what
    they do constrain), not out of data. Tables behind the core seed (acs2023, tidy: the base ACS 2018 fit) count,
    named 'seed: ...'."""
    dims = list(vocab.CORE_DIMS)
    out: dict[tuple[str, str], list[str]] = {(a, b): [] for i, a in enumerate(dims) for b in dims[i + 1 :]}
    named = [(m.name, m) for m in spec.core_margins] + [(f"seed: {m.name}", m) for m in spec.seed_margins]
    for name, m in named:
        crossed = [d for d in m.dims if d in vocab.CORE_DIMS and m.table.shape[m.dims.index(d)] >= 2]
        for a, b in out:
            if a in crossed and b in crossed and not (a in m.given and b in m.given) and name not in out[(a, b)]:
                out[(a, b)].append(name)
    return out


def unconstrained_pairs(spec: GeoSpec) -> list[tuple[str, str]]:
    return [pair for pair, tables in joint_constraints(spec).items() if not tables]


def fit(spec: GeoSpec, tol: float = 1e-6, max_iter: int = 300) -> FittedGeo:
    dims = list(vocab.CORE_DIMS)
    sizes = dim_sizes(spec, dims)
    seed = np.ones(sizes) if spec.core_seed is None else spec.core_seed.astype(np.float64).copy()
    seed *= universe_factor(spec).reshape([-1] + [1] * (len(dims) - 1))
    result = ipf(dims, sizes, spec.core_margins, seed=seed, tol=tol, max_iter=max_iter)
    errors = {f"core: {k}": v for k, v in result.errors.items()}
    iterations = {"core": result.iterations}
    core = result.joint
    blocks: dict[str, tuple[list[str], np.ndarray]] = {}
    conditionals: dict[str, np.ndarray] = {}
    for block in spec.blocks:
        parent = _parent_distribution(spec, core, blocks, block.parents)
        bdims = block.parents + [block.name]
        bsizes = list(parent.shape) + [len(block.categories)]
        bseed = np.ones(bsizes) if block.seed is None else np.broadcast_to(block.seed, bsizes).astype(np.float64)
        bseed = bseed * parent[..., None]
        fixed = Margin(
            f"{block.name}: parents",
            tuple(block.parents),
            {p: np.arange(s) for p, s in zip(block.parents, parent.shape)},
            parent,
            mode="count",
        )
        r = ipf(bdims, bsizes, [fixed, *block.margins], seed=bseed, tol=tol, max_iter=max_iter)
        blocks[block.name] = (bdims, r.joint)
        iterations[block.name] = r.iterations
        errors.update({f"{block.name}: {k}": v for k, v in r.errors.items() if k != fixed.name})
        cond = r.joint.reshape(-1, len(block.categories))
        totals = cond.sum(axis=1, keepdims=True)
        prior = bseed.reshape(-1, len(block.categories))
        with np.errstate(invalid="ignore", divide="ignore"):
            cond = np.where(totals > 0, cond / totals, prior / np.maximum(prior.sum(axis=1, keepdims=True), 1e-300))
        empty = cond.sum(axis=1) <= 0
        cond[empty, 0] = 1.0
        cdf = np.cumsum(cond, axis=1)
        cdf /= cdf[:, -1:]
        conditionals[block.name] = cdf
    return FittedGeo(spec, core, blocks, conditionals, errors, iterations)


def stratified_conditional(cdf: np.ndarray, parent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A child category per person with counts per (parent cell, category) within one of expectation.

    Persons of each parent cell are ranked in a fresh random order and spread evenly over the cell's cumulative
    distribution (systematic sampling per cell), so crosstabs of the sample carry no multinomial noise; the fresh
    order keeps two children of the same parents independent given the parents. O(n): one radix sort on small
    keys, and the categories are laid out per cell with `repeat` instead of a search per person.
    """
    n = parent.shape[0]
    n_cells, k = cdf.shape
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    shuffle = rng.permutation(n)
    key = parent[shuffle]
    key = key.astype(np.uint16 if n_cells < 2**16 else np.int64)
    order = shuffle[np.argsort(key, kind="stable")]
    sizes = np.bincount(parent, minlength=n_cells)
    offset = rng.random(n_cells)
    # rank r of a cell of size m gets u = (offset + r) / m; category j starts at the first r with u >= cdf[j-1]
    bounds = np.ceil(cdf[:, :-1] * sizes[:, None] - offset[:, None]).clip(0, None)
    bounds = np.minimum(bounds, sizes[:, None]).astype(np.int64)
    edges = np.concatenate([np.zeros((n_cells, 1), np.int64), bounds, sizes[:, None]], axis=1)
    counts = np.diff(edges, axis=1)
    child_sorted = np.repeat(np.tile(np.arange(k, dtype=np.int16), n_cells), counts.ravel())
    child = np.empty(n, dtype=np.int16)
    child[order] = child_sorted
    return child


def search_rows(cdf: np.ndarray, row: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw per person from row `row` of `cdf` (rows cumulative, ending at 1), by one searchsorted
    over all rows laid end to end (row + cdf is increasing)."""
    k = cdf.shape[1]
    flat = (np.arange(cdf.shape[0])[:, None] + np.minimum(cdf, 1.0 - 1e-12)).ravel()
    pos = np.searchsorted(flat, row + u, side="right")
    return (pos - row * k).clip(0, k - 1)


def flat_index(codes: dict[str, np.ndarray], names: list[str], sizes: list[int]) -> np.ndarray:
    idx = np.zeros(len(next(iter(codes.values()))), dtype=np.int64)
    for name, size in zip(names, sizes):
        idx = idx * size + codes[name]
    return idx


def derived_age_codes(ages: np.ndarray, groups: list[tuple[int, int]]) -> np.ndarray:
    lookup = np.full(vocab.MAX_AGE + 1, -1, dtype=np.int16)
    for g, (lo, hi) in enumerate(groups):
        lookup[lo : hi + 1] = g
    return lookup[ages]


def sample(fitted: FittedGeo, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n persons as integer codes per attribute (plus `age` in years)."""
    spec = fitted.spec
    dims = list(vocab.CORE_DIMS)
    sizes = dim_sizes(spec, dims)
    cells = systematic_sample(fitted.core, n, rng)
    unraveled = np.unravel_index(cells, sizes)
    codes: dict[str, np.ndarray] = {d: u.astype(np.int16) for d, u in zip(dims, unraveled)}
    codes["age"] = single_year_ages(spec, codes["age_band"], codes["education"], rng)
    for name, groups in spec.derived_ages.items():
        codes[name] = derived_age_codes(codes["age"], groups)
    if spec.hispanic_race is not None:
        codes["race"] = race_alone(codes["race_ethnicity"], spec.hispanic_race, rng)
    for block in spec.blocks:
        parent = flat_index(codes, block.parents, dim_sizes(spec, block.parents))
        codes[block.name] = stratified_conditional(fitted.conditionals[block.name], parent, rng)
    return codes


def single_year_ages(spec: GeoSpec, band: np.ndarray, education: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Age in years inside the band, never below the plausible age of the person's degree.

    Inside a 5-year band the allowed years are equally likely (start + floor(u x width), O(n)); the open 85+ band
    uses its declining single-year weights."""
    weights = age_weights(spec)
    min_by_edu = np.array([vocab.MIN_AGE_FOR_EDUCATION.get(e, 0) for e in vocab.EDUCATION])
    n_edu = len(vocab.EDUCATION)
    n_bands = len(vocab.AGE_BANDS)
    start = np.zeros(n_bands * n_edu, dtype=np.int64)
    width = np.ones(n_bands * n_edu, dtype=np.int64)
    for b, (lo, hi) in enumerate(vocab.AGE_BANDS):
        for e in range(n_edu):
            allowed = [a for a in range(max(lo, min_by_edu[e]), hi + 1) if weights[a] > 0]
            if not allowed:  # the seed excludes this cell; keep the band rather than fail
                allowed = [a for a in range(lo, hi + 1) if weights[a] > 0] or [lo]
            start[b * n_edu + e], width[b * n_edu + e] = allowed[0], allowed[-1] - allowed[0] + 1
    cell = band.astype(np.int64) * n_edu + education
    u = rng.random(band.shape[0])
    ages = start[cell] + (u * width[cell]).astype(np.int64)
    open_band = band == n_bands - 1
    if open_band.any():  # 85+: declining weights past 85
        lo, hi = vocab.AGE_BANDS[-1]
        cell_open = np.arange(n_edu) + (n_bands - 1) * n_edu
        table = np.zeros((n_edu, vocab.MAX_AGE + 1))
        for e, c in enumerate(cell_open):
            w = np.zeros(vocab.MAX_AGE + 1)
            w[start[c] : start[c] + width[c]] = weights[start[c] : start[c] + width[c]]
            table[e] = np.cumsum(w) / w.sum()
        ages[open_band] = search_rows(table, education[open_band].astype(np.int64), u[open_band])
    return ages.astype(np.int16)


def race_alone(race_ethnicity: np.ndarray, hispanic_mix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Non-Hispanic: the race of their group; Hispanic: a race drawn from the state's Hispanic-by-race mix."""
    race = (race_ethnicity.astype(np.int16) - 1).clip(min=0)
    hisp = race_ethnicity == 0
    cdf = np.cumsum(hispanic_mix / hispanic_mix.sum())[None, :]
    race[hisp] = stratified_conditional(cdf, np.zeros(int(hisp.sum()), dtype=np.int64), rng)
    return race


def sample_table(codes: dict[str, np.ndarray], margin: Margin) -> np.ndarray:
    """The sample's counts in a margin's categories (persons outside its universe excluded)."""
    n = len(codes[margin.dims[0]])
    idx = np.zeros(n, dtype=np.int64)
    inside = np.ones(n, dtype=bool)
    for d, k in zip(margin.dims, margin.table.shape):
        m = np.asarray(margin.maps[d])[codes[d]]
        inside &= m >= 0
        idx = idx * k + np.where(m >= 0, m, 0)
    return np.bincount(idx[inside], minlength=margin.table.size).reshape(margin.table.shape).astype(np.float64)
