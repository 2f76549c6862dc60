"""Sample census-faithful synthetic people (demographics joint-fitted from ACS crosstabs, plus Big Five traits).

Input roles: none (a source stage: it reads census tables, no upstream dataset; a recipe gives it no `inputs:`).
Output `data` (one row per person; `label` columns are `ClassLabel`s whose names are the census categories):
    person_id (str), geography (label), geography_id (str), geography_name (str), weight (float64: people
    represented), age (int16), age_band, sex, race_ethnicity (label), hispanic (bool), race, education,
    school_enrollment, marital_status, relationship, household_type, employment_status, occupation, industry,
    class_of_worker, household_income, health_insurance, veteran_status, language, english_ability, nativity,
    citizenship (label), then openness, conscientiousness, extraversion, agreeableness, neuroticism (float32, 0-1;
    left out with `bigfive.mode: none`)
  `mode: paper` instead writes the persona-catch study's meta persona: person_id (str), STATE (str), AGE, SEX,
  RACE (label), weight (float64).
Extra output `fidelity` (one row per geography x census table used): geography, attribute, margin, table (str),
    dims, given (list[str]), cells, persons (int64), tvd, max_abs_error, tvd_oneway, fit_tvd (float64);
    plots in artifacts/fidelity.png.
Extra output `constraints` (one row per geography x pair of core attributes): geography, attributes
    ('age_band x race_ethnicity'), tables (str: the tables crossing the two; empty: the joint is an assumption).
The declarations are `outputs(options)` (from `factory.census.persons`: FULL_COLUMNS, PAPER_COLUMNS,
FIDELITY_COLUMNS).

Example:
    stages:
      people:
        uses: meta_personas
        geographies: [NY, WY, DC]     # or all
        n_per_geography: 1000         # or n_total: 100000, split in proportion to population

How it is built (see `factory.census.model` for the dependency structure and `factory.census.acs2018` for the
tables and priors): per geography, a joint of age band x sex x race/ethnicity x education x marital status x
employment x nativity is fitted by iterative proportional fitting to every ACS one- and two-way table that
crosses them; it is sampled systematically (each cell's count within one of its expectation) and the other
attributes are drawn conditionally on their parents, each conditional itself fitted to the tables that cross it.
Randomness comes from the stage seed and the geography only, so the same recipe gives the same bytes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from factory.census.bigfive import BigFiveOptions
from factory.census.sources import load_source
from factory.errors import DataError, did_you_mean
from factory.options import DataDir, DataFile, StageOptions
from factory.stage import Columns, StageContext, StageOutput, rows_dataset

VERSION = 2  # 2: education, employment, marital status and veteran status by race; veteran by education
INPUTS: dict = {}  # a source stage: it reads census tables, no upstream dataset


class Options(StageOptions):
    source: Literal["acs2018", "acs2023", "tidy"] = Field("acs2018", description="census source (factory ls)")
    geographies: list[str] | Literal["all"] = Field(
        "all", description="state postal codes (NY, DC, ...), or the geography names of a tidy file; 'all'"
    )
    n_per_geography: int | None = Field(None, ge=1, description="persons per geography (default 1000)")
    n_total: int | None = Field(None, ge=1, description="persons in all, split in proportion to population")
    min_age: int = Field(18, ge=18, le=99, description="youngest age in the universe")
    max_age: int = Field(99, ge=18, le=99, description="oldest age in the universe (85+ is spread up to 99)")
    mode: Literal["full", "paper"] = Field(
        "full", description="full attribute set, or the persona-catch study's AGE/SEX/RACE/STATE meta persona"
    )
    bigfive: BigFiveOptions = Field(default_factory=BigFiveOptions)
    census_dir: DataDir | None = Field(
        None,
        description="acs2018 source: read the tables from this folder instead (another vintage in the same "
        "layout, e.g. from `factory census fetch`); its variable labels are checked",
    )
    marginals: DataFile | None = Field(None, description="tidy source: the marginals file")
    base_geography: str | None = Field(None, description="tidy source: ACS 2018 state whose structure seeds the fit")
    ipf_tolerance: float = Field(1e-6, gt=0, le=0.01, description="IPF stops when every table is this close (TV)")

    @field_validator("geographies")
    @classmethod
    def _geographies(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list):
            if not value:
                raise ValueError("name at least one geography, or all")
            twice = sorted({g for g in value if value.count(g) > 1})
            if twice:  # each would be drawn again with the same person ids
                raise ValueError(f"'{twice[0]}' is listed twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Options:
        from factory.census.sources import state_codes

        if self.n_per_geography is not None and self.n_total is not None:
            raise ValueError("give n_per_geography or n_total, not both")
        if self.min_age > self.max_age:
            raise ValueError(f"min_age {self.min_age} is above max_age {self.max_age}")
        if self.source == "tidy":
            if self.marginals is None or self.base_geography is None:
                raise ValueError("source 'tidy' needs marginals (the file) and base_geography (an ACS 2018 state)")
        elif self.marginals is not None:
            raise ValueError(f"marginals is only read by source 'tidy', not '{self.source}'")
        if self.census_dir is not None and self.source != "acs2018":
            raise ValueError(f"census_dir is only read by source 'acs2018', not '{self.source}'")
        if self.base_geography is not None and self.base_geography not in state_codes("acs2018"):
            raise ValueError(
                f"unknown base_geography '{self.base_geography}'"
                f"{did_you_mean(self.base_geography, state_codes('acs2018'))}"
            )
        if self.source != "tidy" and self.census_dir is None and self.geographies != "all":
            known = state_codes(self.source)
            for g in self.geographies:
                if g not in known:
                    raise ValueError(f"unknown geography '{g}' for {self.source}{did_you_mean(g, known)}")
        return self


def plan(options: Options, inputs: dict, ctx: StageContext) -> list[dict]:
    source = load_source(options)
    geos = source.geographies()
    names = list(geos["geo"])
    chosen = names if options.geographies == "all" else list(options.geographies)
    for g in chosen:
        if g not in names:
            raise DataError(f"stages.{ctx.stage}.geographies: unknown geography '{g}'{did_you_mean(g, names)}")
    if options.n_total is None:
        n = options.n_per_geography or 1000
        return [{"geo": g, "n": n} for g in chosen]
    pops = np.array([source.population(g, options.min_age, options.max_age) for g in chosen])
    quota = options.n_total * pops / pops.sum()
    counts = np.floor(quota).astype(int)
    rest = options.n_total - counts.sum()
    counts[np.argsort(-(quota - counts), kind="stable")[:rest]] += 1  # largest remainders
    return [{"geo": g, "n": int(c)} for g, c in zip(chosen, counts) if c > 0]


def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    from factory.census import fidelity, model, persons

    source = load_source(options)
    geo, n = ctx.batch["geo"], ctx.batch["n"]
    spec = source.geo_spec(geo, options.min_age, options.max_age)
    fitted = model.fit(spec, tol=options.ipf_tolerance)
    rng = ctx.rng("persons", geo)
    codes = model.sample(fitted, n, rng)
    traits = persons.big_five(codes, options.bigfive, ctx.rng("bigfive", geo))
    all_geos = list(source.geographies()["geo"])
    if options.mode == "paper":
        data = persons.paper_dataset(spec, codes, n, all_geos)
    else:
        data = persons.full_dataset(spec, codes, traits, n, all_geos)
    report = fidelity.report(spec, codes, fitted.fit_errors)
    metrics = {f"rule_violations.{k}": v for k, v in persons.rule_checks(codes).items()}
    metrics["persons"] = n
    # typed as declared: a geography whose tables are all unconditional has only empty `given` lists
    fidelity_rows = rows_dataset(report, outputs(options)["fidelity"])
    constraints = rows_dataset(fidelity.constraints(spec), outputs(options)["constraints"])
    return StageOutput(data, metrics=metrics, extras={"fidelity": fidelity_rows, "constraints": constraints})


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts) -> dict:
    from factory.census.persons import fidelity_summary

    notes = []
    if options.mode == "paper":
        notes.append(
            "Paper mode reproduces the persona-catch study's meta persona (AGE band, SEX, RACE, STATE, its category "
            "strings). The study drew age x sex x race from ACS 2023 B01001 race iterations, which are not shipped: "
            "here it comes from the joint fitted to the ACS tables above. Unlike the study, Hispanic people are "
            "counted once, 'Some other race' is kept and DC is included."
        )
    if options.bigfive.mode == "census":
        notes.append(
            "Big Five: conditional multivariate normal on age, sex and US birth, fitted on 245,850 IPIP-NEO "
            "internet respondents (a young, self-selected sample), clipped to [0, 1]."
        )
    return fidelity_summary(outputs["fidelity"], artifacts, notes, outputs.get("constraints"))


def outputs(options: Options) -> dict[str, Columns]:
    """The persons (every attribute, Big Five unless `bigfive.mode: none`; or the paper-mode four) and the
    fidelity report per geography and census table, and which pairs of core attributes a table constrains."""
    from factory.census.persons import FIDELITY_COLUMNS, PAPER_COLUMNS, person_columns

    people = PAPER_COLUMNS if options.mode == "paper" else person_columns(options.bigfive.mode != "none")
    constraints = Columns({"geography": "string", "attributes": "string", "tables": "string"})
    return {"data": Columns(people), "fidelity": Columns(FIDELITY_COLUMNS), "constraints": constraints}
