"""Re-drawing judged persons from the census joint (the `calibrate` stage's engine).

`CensusGeography` fits a geography's joint as meta_personas does (`fit` takes calibrate's `census:` options:
source, census_dir, marginals, base_geography, min_age, max_age, ipf_tolerance, bigfive) and gives census margins
for raking and fresh persons for re-draws. `redraw_flagged` judges every person with an injectable judge and
re-draws the implausible ones from the joint, up to `max_rounds` times.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from factory.census.bigfive import BigFiveOptions
from factory.census.sources import load_source
from factory.errors import DataError

# --- the census joint of one geography ------------------------------------------------------------------------

_FITS: dict[tuple, tuple] = {}  # (census options, paths, geography) -> (spec, fitted joint, geography names)


@dataclass
class CensusGeography:
    """A geography's fitted joint: census margins for raking, fresh persons for re-draws."""

    spec: Any  # factory.census.model.GeoSpec
    fitted: Any  # factory.census.model.FittedGeo
    all_geos: list[str]  # the `geography` ClassLabel names
    bigfive: BigFiveOptions

    @classmethod
    def fit(cls, census: Any, geo: str) -> CensusGeography:
        """Fit the geography's joint as meta_personas does. Fits are kept for the last few geographies of this
        process (plan checks, tests and rebuilds reuse them); the key holds the options and resolved paths, so a
        census file edited in place while one process runs is not noticed."""
        from factory.census import model

        paths = tuple(str(p.resolved) for p in (census.census_dir, census.marginals) if p is not None)
        key = (json.dumps(census.model_dump(mode="json", exclude={"bigfive"}), sort_keys=True), paths, geo)
        if key not in _FITS:
            source = load_source(census)  # duck-typed: reads source / census_dir / marginals / base_geography
            spec = source.geo_spec(geo, census.min_age, census.max_age)
            fitted = model.fit(spec, tol=census.ipf_tolerance)
            while len(_FITS) >= 4:
                _FITS.pop(next(iter(_FITS)))
            _FITS[key] = (spec, fitted, list(source.geographies()["geo"]))
        spec, fitted, geos = _FITS[key]
        return cls(spec, fitted, list(geos), census.bigfive)

    def people(self, n: int, rng: np.random.Generator, traits: bool = True):
        """n persons as meta_personas draws them (systematic sample), as a Dataset."""
        from factory.census import model, persons

        codes = model.sample(self.fitted, n, rng)
        t = persons.big_five(codes, self.bigfive, rng) if traits else None
        return persons.full_dataset(self.spec, codes, t, n, self.all_geos)

    def draw(self, originals, round_: int, rng_for: Callable[[str, int], np.random.Generator]):
        """One fresh person from the joint per row of `originals` (a pyarrow table), keeping its person_id and
        weight (and Big Five traits unless they are census draws), with the same columns and encodings.

        Each person is a sample of size one with its own generator: an exact draw from the fitted joint (the
        systematic sampler reduces to an inverse-CDF draw), independent of which other persons are re-drawn."""
        import pyarrow as pa

        from factory.census import model, persons

        n = originals.num_rows
        if n == 0:
            return originals
        fresh_traits = self.bigfive.mode == "census" and "openness" in originals.column_names
        draws, traits = [], []
        for pid in originals.column("person_id").to_pylist():
            rng = rng_for(pid, round_)
            codes = model.sample(self.fitted, 1, rng)
            draws.append(codes)
            if fresh_traits:
                traits.append(persons.big_five(codes, self.bigfive, rng))
        codes = {k: np.concatenate([d[k] for d in draws]) for k in draws[0]}
        table = persons.full_dataset(
            self.spec, codes, np.concatenate(traits) if fresh_traits else None, n, self.all_geos
        ).data.table
        keep = {"person_id", "weight"}
        cols = {
            c: originals.column(c) if c in keep or c not in table.column_names else table.column(c)
            for c in originals.column_names
        }
        return pa.table(cols).cast(originals.schema)

    def drawer(self, rng_for: Callable[[str, int], np.random.Generator]) -> DrawFn:
        return lambda originals, round_: self.draw(originals, round_, rng_for)

    def check(self, features, traits: bool, ctx_stage: str) -> None:
        """The input's encodings must be this joint's: otherwise the census options differ from upstream."""
        sample = self.people(1, np.random.default_rng(0), traits=traits)
        for col, feature in sample.features.items():
            if col in features and features[col] != feature:
                raise DataError(
                    f"stages.{ctx_stage}.census: column '{col}' of the input has other categories than the census "
                    "joint these options fit; they must match the upstream meta_personas stage"
                )

    def margin(self, column: str) -> np.ndarray:
        from factory.census.raking import census_margin

        counts = census_margin(self.fitted, column)
        return counts * (self.spec.population / counts.sum())  # the population `weight` sums to


# --- the re-draw loop (judge injectable) -----------------------------------------------------------------------


@dataclass
class Verdict:
    verdict: str  # plausible | implausible | invalid
    raw: str = ""
    reason: str | None = None


JudgeFn = Callable[[list[dict], int], list[Verdict]]  # (rows as dicts, round) -> one verdict per row
DrawFn = Callable[[Any, int], Any]  # (pyarrow rows to replace, round) -> replacement rows, same schema


@dataclass
class Redrawn:
    table: Any  # pyarrow: the input columns plus judge_rounds, flagged, replaced_from
    judgements: list[dict]
    counts: dict[str, float]


def redraw_flagged(people, judge: JudgeFn, draw: DrawFn, max_rounds: int = 3) -> Redrawn:
    """Judge every person; re-draw the implausible ones with `draw` and judge them again, `max_rounds` times at
    most. Persons still implausible after the last re-draw are kept (their last draw) and flagged; invalid
    verdicts leave a person as it is, unflagged. `people` is a Dataset or a pyarrow table."""
    import pyarrow as pa

    table = people if isinstance(people, pa.Table) else people.with_format("arrow")[:]
    n = table.num_rows
    ids = table.column("person_id").to_pylist()
    tables = [table]
    src = np.zeros(n, dtype=np.int64)  # which table holds each person's current row, and where
    row = np.arange(n, dtype=np.int64)
    rounds = np.zeros(n, dtype=np.int32)
    flagged = np.zeros(n, dtype=bool)
    judgements: list[dict] = []
    counts: dict[str, float] = {}
    pending = np.arange(n)  # input positions of the persons judged this round
    current = table  # their current rows, in `pending` order
    rejected_rows = np.zeros(0, dtype=np.int64)  # positions within `current` of the implausible ones
    for r in range(max_rounds + 1):
        if r > 0:
            current = draw(current.take(pa.array(rejected_rows)), r)
            if current.num_rows != len(pending):
                raise ValueError(f"draw returned {current.num_rows} rows for {len(pending)} persons")
            tables.append(current.select(table.column_names).cast(table.schema))
            src[pending], row[pending], rounds[pending] = len(tables) - 1, np.arange(len(pending)), r
            counts["redraws"] = counts.get("redraws", 0) + len(pending)
        verdicts = judge(current.to_pylist(), r)
        bad = np.array([v.verdict == "implausible" for v in verdicts], dtype=bool)
        for i, v in zip(pending, verdicts):
            judgements.append({"person_id": ids[i], "round": r, "verdict": v.verdict, "raw": v.raw, "reason": v.reason})
        counts[f"round{r}.judged"] = len(pending)
        counts[f"round{r}.rejected"] = int(bad.sum())
        counts[f"round{r}.invalid"] = sum(v.verdict == "invalid" for v in verdicts)
        flagged[pending] = bad
        rejected_rows = np.flatnonzero(bad)
        pending = pending[bad]
        if len(pending) == 0:
            break
    counts["flagged"] = int(flagged.sum())
    offsets = np.cumsum([0] + [t.num_rows for t in tables[:-1]])
    out = pa.concat_tables(tables).take(pa.array(offsets[src] + row))
    out = out.append_column("judge_rounds", pa.array(rounds, pa.int32()))
    out = out.append_column("flagged", pa.array(flagged, pa.bool_()))
    replaced = [pid if k > 0 else None for pid, k in zip(ids, rounds)]
    out = out.append_column("replaced_from", pa.array(replaced, pa.string()))
    return Redrawn(out, judgements, counts)
