"""Census sampling: persons per second (1 core), IPF fit time against the `ipfn` package, memory.

    .venv/bin/python bench/census_sampling.py [--persons 1000000] [--state NY]

Tables printed:
1. sampling rate with every attribute (and Big Five), next to the original study's method: a row-wise sampler that
   builds a categorical distribution per attribute per person (the seed-000 sampler measured ~310-400 persons/s
   on this kind of machine; `seed-000-sampler-measured.md`). The row-wise baseline here is a re-creation of that
   method (torch `Categorical` per row, 11 attributes), not the original code, run on 2,000 persons.
2. IPF: the core joint (100,800 cells) fitted to margins that `ipfn` can express (full-resolution crosstabs taken
   from the fitted NY joint), by `factory.census.ipf` and by `ipfn.ipfn`, at the same tolerance.
3. memory: peak traced allocation of fitting one state and sampling the persons.
Runs on one core (OMP/MKL/OpenBLAS threads pinned to 1).
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tables import print_table  # noqa: E402

from factory.census import acs2018, bigfive, model, vocab  # noqa: E402
from factory.census.ipf import Margin, ipf  # noqa: E402


def rowwise_baseline(fitted: model.FittedGeo, n: int, seed: int = 0) -> float:
    """Persons/s of the original method: one torch Categorical per attribute per person (pandas row apply)."""
    import pandas as pd
    import torch

    torch.manual_seed(seed)
    core = fitted.core.sum(axis=tuple(range(2, 7)))  # age x sex, as the study drew its meta persona
    probs = torch.tensor(core.ravel() / core.sum())
    conds = [torch.tensor(np.diff(np.c_[np.zeros(len(c)), c], axis=1)) for c in fitted.conditionals.values()]
    start = time.perf_counter()
    people = pd.DataFrame({"cell": torch.distributions.Categorical(probs).sample((n,)).numpy()})

    def one(row):
        out = {}
        for i, c in enumerate(conds):
            p = c[int(row["cell"]) % len(c)]
            out[f"a{i}"] = int(torch.distributions.Categorical(p.clamp(min=0) + 1e-12).sample())
        return pd.Series(out)

    people.apply(one, axis=1)
    return n / (time.perf_counter() - start)


def sampling(fitted: model.FittedGeo, persons: int) -> list[list[str]]:
    rng = np.random.default_rng(0)
    model.sample(fitted, 10_000, rng)  # warm up
    rows = []
    for n in (100_000, persons):
        start = time.perf_counter()
        codes = model.sample(fitted, n, rng)
        mid = time.perf_counter()
        bigfive.sample(codes["age"], codes["sex"] == 0, codes["nativity"] == 0, rng)
        end = time.perf_counter()
        rows.append(
            [
                f"factory (numpy, systematic + stratified), n={n:,}",
                f"{n / (mid - start):,.0f}",
                f"{n / (end - start):,.0f}",
            ]
        )
    base = rowwise_baseline(fitted, 2_000)
    rows.append(["row-wise Categorical per person (the study's method), n=2,000", f"{base:,.0f}", "-"])
    rows.append(["speed-up", f"{float(rows[1][1].replace(',', '')) / base:,.0f}x", ""])
    return rows


def ipf_comparison(fitted: model.FittedGeo, tol: float) -> list[list[str]]:
    from ipfn import ipfn

    dims = list(vocab.CORE_DIMS)
    sizes = list(fitted.core.shape)
    truth = fitted.core
    pairs = [
        ("age_band", "sex"),
        ("race_ethnicity",),
        ("age_band", "sex", "education"),
        ("age_band", "sex", "marital_status"),
        ("age_band", "employment_status"),
        ("education", "employment_status"),
        ("age_band", "nativity"),
        ("marital_status", "nativity"),
        ("education", "nativity"),
        ("race_ethnicity", "education"),
    ]
    aggregates, axes, margins = [], [], []
    for p in pairs:
        idx = [dims.index(d) for d in p]
        agg = truth.sum(axis=tuple(i for i in range(len(dims)) if i not in idx))
        aggregates.append(agg)
        axes.append(idx)
        margins.append(Margin("+".join(p), p, {d: np.arange(sizes[dims.index(d)]) for d in p}, agg, mode="count"))
    seed = np.ones(sizes)
    start = time.perf_counter()
    ours = ipf(dims, sizes, margins, seed=seed.copy(), tol=tol, max_iter=1000)
    t_ours = time.perf_counter() - start

    def worst(joint: np.ndarray) -> float:
        return max(
            float(np.abs(joint.sum(axis=tuple(i for i in range(len(dims)) if i not in a)) - g).sum() / g.sum() / 2)
            for g, a in zip(aggregates, axes)
        )

    start = time.perf_counter()
    theirs = ipfn.ipfn(
        seed.copy(),
        [a.copy() for a in aggregates],
        [list(a) for a in axes],
        convergence_rate=tol,
        max_iteration=1000,
        rate_tolerance=0,
    ).iteration()
    t_theirs = time.perf_counter() - start
    return [
        ["factory.census.ipf", f"{t_ours:.2f}", str(ours.iterations), f"{worst(ours.joint):.2e}"],
        ["ipfn 1.4.4 (ipfn_np)", f"{t_theirs:.2f}", "-", f"{worst(theirs):.2e}"],
        ["ratio", f"{t_theirs / t_ours:.1f}x", "", ""],
    ]


def memory(state: str, persons: int) -> list[list[str]]:
    tracemalloc.start()
    spec = acs2018.geo_spec(state)
    fitted = model.fit(spec)
    _, fit_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    model.sample(fitted, persons, np.random.default_rng(0))
    _, sample_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return [
        ["fit one state (core + 10 conditionals)", f"{fit_peak / 2**20:,.0f}"],
        [f"sample {persons:,} persons", f"{sample_peak / 2**20:,.0f}"],
        ["per person sampled", f"{sample_peak / persons:,.0f} bytes"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--state", default="NY")
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args()
    spec = acs2018.geo_spec(args.state)
    start = time.perf_counter()
    fitted = model.fit(spec)
    fit_s = time.perf_counter() - start
    print_table(
        f"sampling rate, {args.state}, 1 core (fit of the state: {fit_s:.2f} s, once per state)",
        ["sampler", "persons/s", "persons/s with Big Five"],
        sampling(fitted, args.persons),
    )
    print_table(
        f"IPF on the core joint (100,800 cells, 10 crosstabs), tolerance {args.tol:g}",
        ["implementation", "seconds", "sweeps", "worst TV after fit"],
        ipf_comparison(fitted, args.tol),
    )
    print_table("memory (tracemalloc peak)", ["step", "MiB"], memory(args.state, args.persons))


if __name__ == "__main__":
    main()
