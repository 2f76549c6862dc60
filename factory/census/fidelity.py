"""Fidelity of a synthetic sample to the census tables it was fitted to.

For each margin and geography: the sample's table in the margin's categories against the census table, both as
shares of the persons inside the margin's universe. Where a table is used *given* some dimensions (marital
status given age and sex), the census side is its conditional distribution weighted by the sample's own mass in
those cells, so universes that differ by design (S1201's 15-19 band standing for 18-19-year-olds) are not
counted as error; what is measured is whether, e.g., 45-54-year-old women are married as often as the census
says.

    tvd            total-variation distance over the table's cells
    max_abs_error  largest absolute difference of a cell's share
    tvd_oneway     total-variation distance of the table's own attribute(s) (its non-given dimensions) alone
"""

from __future__ import annotations

import numpy as np

from factory.census.ipf import Margin
from factory.census.model import GeoSpec, joint_constraints, sample_table


def compare(sample: np.ndarray, margin: Margin) -> dict[str, float]:
    n = sample.sum()
    goal = np.asarray(margin.table, dtype=np.float64).ravel()
    current = sample.ravel()
    if margin.mode == "count" or not margin.given:
        expected = goal / goal.sum() * n
    else:
        given = margin.given_index()
        expected = margin.conditional() * np.bincount(given, weights=current, minlength=given.max() + 1)[given]
    if n <= 0:
        return {"n": 0.0, "tvd": float("nan"), "max_abs_error": float("nan"), "tvd_oneway": float("nan")}
    diff = (current - expected) / n
    target_axes = tuple(i for i, d in enumerate(margin.dims) if d not in margin.given)
    shape = margin.table.shape
    drop = tuple(i for i in range(len(shape)) if i not in target_axes)
    one_s = current.reshape(shape).sum(axis=drop) / n
    one_e = expected.reshape(shape).sum(axis=drop) / n
    return {
        "n": float(n),
        "tvd": float(np.abs(diff).sum() / 2),
        "max_abs_error": float(np.abs(diff).max()),
        "tvd_oneway": float(np.abs(one_s - one_e).sum() / 2),
    }


def margins(spec: GeoSpec) -> list[tuple[str, Margin]]:
    """Every census table a geography's fit uses, as (attribute: 'core' or the block's name, margin)."""
    return [("core", m) for m in spec.core_margins] + [(b.name, m) for b in spec.blocks for m in b.margins]


def report(spec: GeoSpec, codes: dict[str, np.ndarray], fit_errors: dict[str, float]) -> list[dict]:
    return [row(spec, kind, margin, codes, fit_errors) for kind, margin in margins(spec)]


def row(spec: GeoSpec, kind: str, margin: Margin, codes: dict[str, np.ndarray], fit_errors: dict[str, float]) -> dict:
    """One report row: a sample's (`codes`) table against one census margin."""
    stats = compare(sample_table(codes, margin), margin)
    return {
        "geography": spec.geo,
        "attribute": kind,
        "margin": margin.name,
        "table": margin.name.split(" ")[0],
        "dims": list(margin.dims),
        "given": list(margin.given),
        "cells": int(np.asarray(margin.table).size),
        "persons": int(stats["n"]),
        "tvd": stats["tvd"],
        "max_abs_error": stats["max_abs_error"],
        "tvd_oneway": stats["tvd_oneway"],
        "fit_tvd": float(fit_errors.get(f"{kind}: {margin.name}", 0.0)),
    }


def constraints(spec: GeoSpec) -> list[dict]:
    """One row per pair of core attributes: the tables that constrain the two jointly ('' when none does)."""
    return [
        {"geography": spec.geo, "attributes": f"{a} x {b}", "tables": "; ".join(tables)}
        for (a, b), tables in joint_constraints(spec).items()
    ]
