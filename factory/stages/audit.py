"""Audit any people dataset against the census: the meta_personas fidelity report, for people it did not draw.

Input role: `people` (person_id, geography as a state postal code, and whichever census attributes it carries,
with the meta_personas category names: a mapped `dataset` stage, a hub:// people set, meta_personas itself).
Output `data` (one row per geography x census table the dataset's columns allow; the columns of meta_personas'
`fidelity`): geography, attribute, margin, table (str), dims, given (list[str]), cells, persons (int64), tvd,
max_abs_error, tvd_oneway, fit_tvd (float64).
Extra output `oneway` (one row per geography x attribute with a census margin): geography, attribute (str),
persons (int64), tvd (float64), largest_gap (str: the category furthest from the census), gap (float64).
Extra output `not_compared` (one row per geography x table or attribute left out): geography, what, reason (str).
Plots in artifacts/fidelity.png; the card section lists what could not be compared and why.

Example (recipes/audit_personas.yaml):
    stages:
      audit:
        uses: audit
        inputs: [people]          # a dataset stage with role: people
        census: {source: acs2018}

Each geography's census joint is fitted as meta_personas fits it (the `census:` options); the people are
compared with it as meta_personas' report compares its own sample (`factory.census.audit`). Persons outside the
census universe (younger than `census.min_age`) or with a missing value are left out of the tables they miss.
"""

from __future__ import annotations

from pydantic import Field

from factory.census.sources import CensusOptions
from factory.options import StageOptions
from factory.stage import Columns, Needs, StageContext, StageOutput, rows_dataset

VERSION = 1
INPUTS = {"people": Needs("person_id", "geography", description="people with census attributes (meta categories)")}


class Options(StageOptions):
    census: CensusOptions = Field(default_factory=CensusOptions, description="the census to compare with")


def _geographies(people) -> list[str]:
    from datasets import ClassLabel

    feature = people.features["geography"]
    values = people["geography"]
    return [feature.names[v] for v in values] if isinstance(feature, ClassLabel) else [str(v) for v in values]


def plan(options: Options, inputs: dict, ctx: StageContext) -> list[dict]:
    from factory.census.sources import load_source

    geos = list(dict.fromkeys(_geographies(inputs["people"])))
    known = set(load_source(options.census).geographies()["geo"])
    return [{"geo": g, "census": g in known} for g in geos]


def _columns(people, rows: list[int]) -> dict[str, list]:
    """The people's columns for these rows, ClassLabel codes as their names."""
    from datasets import ClassLabel

    subset = people.select(rows)
    out = {}
    for name, feature in subset.features.items():
        values = subset[name]
        out[name] = (
            [None if v is None else feature.names[v] for v in values] if isinstance(feature, ClassLabel) else values
        )
    return out


def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    from factory.census.audit import audit
    from factory.census.redraw import CensusGeography

    people, geo = inputs["people"], ctx.batch["geo"]
    rows = [i for i, g in enumerate(_geographies(people)) if g == geo]
    declared = outputs(options)
    if not ctx.batch["census"]:
        reason = f"{len(rows)} persons in a geography census source {options.census.source} does not have"
        left_out = rows_dataset([{"geography": geo, "what": "geography", "reason": reason}], declared["not_compared"])
        empty = {"oneway": rows_dataset([], declared["oneway"]), "not_compared": left_out}
        return StageOutput(rows_dataset([], declared["data"]), extras=empty)
    census = CensusGeography.fit(options.census, geo)
    report = audit(census.spec, census.fitted, _columns(people, rows))
    return StageOutput(
        rows_dataset(report.fidelity, declared["data"]),
        metrics={"persons": float(len(rows))},
        extras={
            "oneway": rows_dataset(report.oneway, declared["oneway"]),
            "not_compared": rows_dataset(report.not_compared, declared["not_compared"]),
        },
    )


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts) -> dict:
    from factory.census.persons import fidelity_summary

    left_out = outputs["not_compared"].to_pandas().drop_duplicates(["what", "reason"])
    notes = [f"Not compared: {r.what} ({r.reason})." for r in left_out.itertuples()]
    summary = fidelity_summary(outputs["data"], artifacts, notes, drawn=False)
    oneway = outputs["oneway"].to_pandas()
    summary["oneway_tvd_max"] = {
        a: round(float(t), 5) for a, t in oneway.groupby("attribute", sort=False)["tvd"].max().items()
    }
    summary["not_compared"] = {r.what: r.reason for r in left_out.itertuples()}
    return summary


def outputs(options: Options) -> dict[str, Columns]:
    """The fidelity rows (meta_personas' `fidelity` columns), one-way TVDs per attribute, what was left out."""
    from factory.census.audit import NOT_COMPARED_COLUMNS, ONEWAY_COLUMNS
    from factory.census.persons import FIDELITY_COLUMNS

    return {
        "data": Columns(FIDELITY_COLUMNS),
        "oneway": Columns(ONEWAY_COLUMNS),
        "not_compared": Columns(NOT_COMPARED_COLUMNS),
    }
