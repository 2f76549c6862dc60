"""Calibrate meta personas to the census: an optional LLM plausibility judge with re-draws from the joint, then raking.

Input role: `people` (a full-mode `meta_personas` dataset): every full-mode column, read by the judge and
re-drawn from the census joint -- person_id, geography (label), geography_id, geography_name, weight, age,
age_band, sex, race_ethnicity, hispanic, race, education, school_enrollment, marital_status, relationship,
household_type, employment_status, occupation, industry, class_of_worker, household_income, health_insurance,
veteran_status, language, english_ability, nativity, citizenship (Big Five traits when `census.bigfive` draws
them). When it is a stored meta_personas stage, its manifest (`ctx.upstream["people"].manifest`) must record the
same census options.
Output `data` (one row per input person, same row order, person_id and columns as the input, plus):
    raking_weight (float64: people represented after raking; sums to the geography's population like `weight`),
    judge_rounds (int32: how many times this row was re-drawn), flagged (bool: still judged implausible after the
    last round), replaced_from (str or null: the person_id whose original attributes were replaced; the original
    row stays in the upstream dataset under that id and nothing of it is copied here)
Extra outputs (declared by `outputs(options)`):
    judgements (one row per judge call; only with a judge): person_id (str), round (int32: 0 = the input person,
    k = its k-th re-draw), verdict (str: plausible / implausible / invalid), raw (str: the model's text),
    reason (str or null: why an answer was invalid)
    raking (one row per geography x raked attribute): geography (str), attribute (str), tvd_before, tvd_after
    (float64: weighted sample vs census shares), iterations (int32), converged (bool)
Failures: judge answers that stayed invalid after retries (the person is kept, unflagged; see `judgements`).
Metrics (summed over batches): judge.calls, judge.judged, judge.round<k>.judged / .rejected / .invalid,
judge.redraws, judge.flagged, judge.rejection_rate.<geo> (round 0), raking.tvd_before.<geo>.<attribute>,
raking.tvd_after.<geo>.<attribute>, raking.not_converged. Rejection rates over all geographies are in the
manifest summary (rates do not add up over batches).

Example:
    stages:
      people: {uses: meta_personas, geographies: [WY, VT], n_per_geography: 1000}
      calibrated:
        uses: calibrate
        inputs: [people]
        judge: {backend: small, max_rounds: 3}      # leave out for raking only
        rake_on: [age_band, sex, race_ethnicity, education]
        trim: [0.3, 3.0]
        # census: {source: acs2018, min_age: 18}    # must match the upstream meta_personas stage

The judge (study 000's consistency filter, done right). Per geography an LLM reads each person's demographic facts
and answers `plausible` or `implausible` (a choice constraint, so every parsed answer is one of the two; answers
that still fail are kept as `invalid` and leave the person unflagged). A rejected person is re-drawn as a fresh
person from the census joint of its own geography -- the same fitted model meta_personas samples, fitted once per
geography, seeded by (stage seed, person_id, round) -- keeping person_id and weight, and judged again, up to
`judge.max_rounds` re-draws. The study instead redrew the rejected persons' attributes independently from a
shrinking urn of the sample's own counts (losing every conditional structure), processed only its first batch
and saved no rejection statistics; here every person is processed and every judge call is kept. Re-drawing from
the joint is rejection sampling: the result keeps the census distribution except for what the judge removes
(exactly the census conditional on being judged plausible, up to persons still flagged after the last round).
The judge's rejection rate is itself a finding, not a quality measure of the people: the census joint already
excludes impossible combinations (meta_personas' rule checks are all zero), so every rejection of an untouched
sample is the judge's error, and re-drawing only swaps census draws for other census draws. A 135M model judges
by chance, not by content: SmolLM2-135M (the embedded default) called all 60 persons of a Vermont sample
plausible when greedy, and at temperature 1 flagged 43% of them and 65% of their re-draws; the tests'
random-weight model says "implausible" 90-100% of the time. Use a judge worth its rejection rate, and report it.

Raking. Per geography, the person weights are raked (iterative proportional fitting on the weights: start from
`weight`, multiply by each margin's target/current ratio in turn, until the largest relative margin error is
below `tol`) to the census population count of each category of the `rake_on` attributes, taken from the same
fitted joint; `trim` bounds raking_weight/weight. This repairs samples whose composition drifted from the census
(re-draws, a subset, hand edits); on an untouched meta_personas sample the margins already agree to rounding.
The census options (`census:`) must match the upstream meta_personas stage: the fitted joint is the same only
then. When the input is a stored meta_personas output, its manifest is read and any difference is an error.
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from factory.census.persons import FULL_COLUMNS, person_columns
from factory.census.raking import RAKEABLE
from factory.census.redraw import CensusGeography, Verdict, redraw_flagged
from factory.census.sources import CensusOptions
from factory.errors import DataError, did_you_mean
from factory.options import BackendRef, OptionBlock, StageOptions
from factory.stage import Columns, Needs, StageContext, StageOutput, rows_dataset

log = logging.getLogger(__name__)

VERSION = 2  # 2: re-draws from the census joint with its crosstabs by race (meta_personas 2)
PROMPTS = ["calibrate/system.jinja", "calibrate/judge.jinja"]
VERDICTS = ["plausible", "implausible"]
# the full-mode meta persona columns a re-draw must reproduce (Big Five traits are optional)
REQUIRED = list(FULL_COLUMNS)
INPUTS = {"people": Needs(*REQUIRED, description="full-mode meta personas: judged, re-drawn and raked")}
ADDED = ("raking_weight", "judge_rounds", "flagged", "replaced_from")
ADDED_COLUMNS = {"raking_weight": "float64", "judge_rounds": "int32", "flagged": "bool", "replaced_from": "string"}
# meta_personas options that decide which joint the people came from (compared with the upstream manifest)
CENSUS_FIELDS = (
    "source",
    "census_dir",
    "marginals",
    "base_geography",
    "min_age",
    "max_age",
    "ipf_tolerance",
    "bigfive",
)


class PlausibilityJudgeOptions(OptionBlock):
    backend: BackendRef = Field(..., description="a backend named under `backends:`")
    max_rounds: int = Field(3, ge=0, le=50, description="re-draws per person at most (0: judge only, never redraw)")
    temperature: float = Field(0.0, ge=0, le=2, description="0 = greedy: the verdict depends on the person only")
    max_tokens: int = Field(16, ge=4, le=256, description="room for the verdict word")
    max_retries: int = Field(2, ge=0, le=10, description="re-asks with a fresh seed before an answer is invalid")


class Options(StageOptions):
    judge: PlausibilityJudgeOptions | None = Field(
        None, description="LLM plausibility judge with re-draws; none: raking only"
    )
    rake_on: list[str] = Field(
        default_factory=lambda: ["age_band", "sex", "race_ethnicity", "education"],
        description=f"attributes whose census margins the weights are raked to (any of {', '.join(RAKEABLE)})",
    )
    max_iter: int = Field(200, ge=1, le=10000, description="raking sweeps at most")
    tol: float = Field(1e-6, gt=0, le=0.1, description="raking stops when every margin is this close (relative)")
    trim: tuple[float, float] | None = Field(None, description="[lo, hi] bounds of raking_weight / weight")
    census: CensusOptions = Field(default_factory=CensusOptions, description="must match the upstream people")

    @field_validator("rake_on")
    @classmethod
    def _rakeable(cls, value: list[str]) -> list[str]:
        for c in value:
            if c not in RAKEABLE:
                raise ValueError(f"cannot rake on '{c}'{did_you_mean(c, RAKEABLE)} (rakeable: {', '.join(RAKEABLE)})")
        if len(set(value)) != len(value):
            raise ValueError("an attribute is named twice")
        return value

    @field_validator("trim")
    @classmethod
    def _trim(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not (0 <= value[0] <= 1 <= value[1]):
            raise ValueError("trim is [lo, hi] with 0 <= lo <= 1 <= hi")
        return value


def files(options: Options) -> list[Path]:
    """Built-in prompt files: their bytes enter the fingerprint like any file the recipe names."""
    from factory.prompts import builtin

    return [builtin(p) for p in PROMPTS] if options.judge is not None else []


def _choice(text: str) -> str:
    from factory.llm.structured import Invalid

    word = text.strip().strip(".").lower()
    if word not in VERDICTS:
        raise Invalid(f"not a verdict: {text[:40]!r}")
    return word


def llm_judge(
    client: Any, options: PlausibilityJudgeOptions, names: dict, ctx: StageContext, metrics: dict, failures: list
):
    """A JudgeFn asking `client` for one verdict per person (choice-constrained), recording tokens and failures."""
    from factory.llm.structured import generate_validated
    from factory.llm.types import Constraint, GenerationRequest, Sampling
    from factory.personas.styles import facts
    from factory.prompts import builtin, render
    from factory.seeds import derive_seed

    system = render(builtin("calibrate/system.jinja"))
    template = builtin("calibrate/judge.jinja")

    def judge(rows: list[dict], round_: int) -> list[Verdict]:
        reqs = []
        for p in rows:
            f = facts(p, names)
            f.pop("Big Five (0-1)", None)  # a demographic check: personality is not a census fact
            seed = derive_seed(ctx.seed, "judge", p["person_id"], round_) % (2**31)
            reqs.append(
                GenerationRequest.chat(
                    [{"role": "system", "content": system}, {"role": "user", "content": render(template, facts=f)}],
                    Sampling(options.temperature, 1.0, options.max_tokens, (), seed),
                    Constraint.one_of(VERDICTS),
                )
            )
        out = []
        for p, v in zip(rows, generate_validated(client, reqs, _choice, options.max_retries)):
            metrics["tokens_in.judge"] = metrics.get("tokens_in.judge", 0) + v.tokens_in
            metrics["tokens_out.judge"] = metrics.get("tokens_out.judge", 0) + v.tokens_out
            metrics["retries.judge"] = metrics.get("retries.judge", 0) + v.attempts - 1
            if v.ok:
                out.append(Verdict(v.value, v.result.text))
            else:
                out.append(Verdict("invalid", v.result.text, v.reason))
                failures.append(
                    {"reason": v.reason, "person_id": p["person_id"], "round": round_, "raw": v.result.text}
                )
        return out

    return judge


# --- stage --------------------------------------------------------------------------------------------------


def _check_input(people, ctx: StageContext, options: Options) -> None:
    missing = [c for c in REQUIRED if c not in people.column_names]
    if missing:
        raise DataError(
            f"stages.{ctx.stage}.inputs: the input lacks {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}"
            " (calibrate needs a full-mode meta_personas dataset)"
        )
    clash = [c for c in ADDED if c in people.column_names]
    if clash:
        raise DataError(f"stages.{ctx.stage}.inputs: the input already has {', '.join(clash)} (calibrated twice?)")
    upstream = _upstream_manifest(ctx)
    if upstream is not None:
        ours = options.census.model_dump(mode="json")
        theirs = upstream.get("config", {})
        for key in CENSUS_FIELDS:
            if key in theirs and theirs[key] != ours[key]:
                raise DataError(
                    f"stages.{ctx.stage}.census.{key}: {json.dumps(ours[key])} but the input's people were built "
                    f"with {json.dumps(theirs[key])}; the census options must match the upstream meta_personas stage"
                )


def _upstream_manifest(ctx: StageContext) -> dict | None:
    """The manifest of the meta_personas stage that wrote the input (None for a hub:// input, another stage or a
    context without upstream); read only to check the census options."""
    upstream = ctx.upstream.get("people")
    if upstream is None or upstream.uses != "meta_personas":
        return None
    return upstream.manifest


def plan(options: Options, inputs: dict, ctx: StageContext) -> list[dict]:
    """One batch per geography (so each fits its joint once and rakes all its persons together). Rows of a
    geography that are not contiguous merge the geographies in between into one batch, keeping row order."""
    people = inputs["people"]
    _check_input(people, ctx, options)
    names = people.features["geography"].names
    codes = np.asarray(people.with_format("arrow")["geography"].to_numpy(), dtype=np.int64)
    n = len(codes)
    if n == 0:
        return []
    uniq, first = np.unique(codes, return_index=True)
    _, last_rev = np.unique(codes[::-1], return_index=True)
    spans = sorted((int(f), n - int(lr), int(g)) for g, f, lr in zip(uniq, first, last_rev))
    batches: list[dict] = []
    for lo, hi, g in spans:
        if batches and lo < batches[-1]["rows"][1]:
            batches[-1]["rows"][1] = max(batches[-1]["rows"][1], hi)
            batches[-1]["geographies"].append(names[g])
        else:
            batches.append({"geographies": [names[g]], "rows": [lo, hi]})
    return batches


def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    import pyarrow as pa
    from datasets import ClassLabel, Dataset, DatasetInfo, Features, Value

    people = inputs["people"]
    features = people.features
    names = {c: f.names for c, f in features.items() if isinstance(f, ClassLabel)}
    lo, hi = ctx.batch["rows"]
    table = people.with_format("arrow")[lo:hi]
    traits = "openness" in table.column_names
    if traits and options.census.bigfive.mode == "none":
        raise DataError(f"stages.{ctx.stage}.census.bigfive.mode: 'none' but the input has Big Five traits")
    if not traits and options.census.bigfive.mode != "none":
        raise DataError(
            f"stages.{ctx.stage}.census.bigfive.mode: '{options.census.bigfive.mode}' but the input has no Big Five "
            "traits (its people were drawn with bigfive.mode: none?)"
        )
    metrics: dict[str, float] = {}
    failures: list[dict] = []
    judgements: list[dict] = []
    raking_rows: list[dict] = []
    with ExitStack() as stack:  # the judge's backend (its calls counted, its cache closed) for the whole batch
        judge = None
        if options.judge is not None:
            client = stack.enter_context(ctx.llm(options.judge.backend))
            judge = llm_judge(client, options.judge, names, ctx, metrics, failures)
        parts, positions = _geographies(options, judge, table, features, ctx, metrics, judgements, raking_rows)

    out_features = Features({**features, **{c: Value(t) for c, t in ADDED_COLUMNS.items()}})
    order = np.argsort(np.concatenate(positions), kind="stable")
    data = pa.concat_tables(parts).take(pa.array(order)).cast(out_features.arrow_schema)
    declared = outputs(options)
    extras = {"raking": rows_dataset(raking_rows, declared["raking"])}
    if options.judge is not None:
        extras["judgements"] = rows_dataset(judgements, declared["judgements"])
    # an explicit fingerprint: without one, datasets hashes the whole table
    dataset = Dataset(data, info=DatasetInfo(features=out_features), fingerprint=f"calibrate-{ctx.batch_index}")
    return StageOutput(dataset, failures, metrics, extras=extras)


def _geographies(options, judge, table, features, ctx, metrics, judgements, raking_rows) -> tuple[list, list]:
    """Per geography of the batch: judge and re-draw (with a judge), then rake. Returns the geographies' tables
    and the batch positions of their rows; fills metrics, judgements and raking_rows."""
    import pyarrow as pa

    from factory.census.raking import rake, tvd

    names = features["geography"].names
    geo_codes = table.column("geography").to_numpy()
    traits = "openness" in table.column_names

    def rng_for(person_id: str, round_: int) -> np.random.Generator:
        return ctx.rng("calibrate", person_id, round_)  # depends on the person and round only, not on batching

    parts, positions = [], []
    for geo in ctx.batch["geographies"]:
        rows = np.flatnonzero(geo_codes == names.index(geo))
        sub = table.take(pa.array(rows))
        census = CensusGeography.fit(options.census, geo)
        census.check(features, traits, ctx.stage)
        ages = sub.column("age").to_numpy()
        if len(ages) and (ages.min() < options.census.min_age or ages.max() > options.census.max_age):
            raise DataError(
                f"stages.{ctx.stage}.census: {geo} has ages {ages.min()}-{ages.max()}, outside min_age/max_age "
                f"{options.census.min_age}-{options.census.max_age}; they must match the upstream meta_personas stage"
            )
        if judge is not None:
            done = redraw_flagged(sub, judge, census.drawer(rng_for), options.judge.max_rounds)
            sub = done.table
            judgements += done.judgements
            for k, v in done.counts.items():
                metrics[f"judge.{k}"] = metrics.get(f"judge.{k}", 0) + v
            metrics["judge.judged"] = metrics.get("judge.judged", 0) + len(rows)
            metrics["judge.calls"] = metrics.get("judge.calls", 0) + len(done.judgements)
            metrics[f"judge.rejection_rate.{geo}"] = done.counts["round0.rejected"] / max(len(rows), 1)
        else:
            sub = sub.append_column("judge_rounds", pa.array(np.zeros(len(rows), np.int32)))
            sub = sub.append_column("flagged", pa.array(np.zeros(len(rows), bool)))
            sub = sub.append_column("replaced_from", pa.nulls(len(rows), pa.string()))
        weight = sub.column("weight").to_numpy()
        codes = [np.asarray(sub.column(c).to_numpy(), dtype=np.int64) for c in options.rake_on]
        targets = [census.margin(c) for c in options.rake_on]
        fit = rake(weight, codes, targets, options.tol, options.max_iter, options.trim)
        if abs(weight.sum() - census.spec.population) > 1e-3 * census.spec.population:
            log.info("%s: input weights sum to %.0f, census population %.0f", geo, weight.sum(), census.spec.population)
        metrics["raking.not_converged"] = metrics.get("raking.not_converged", 0) + (not fit.converged)
        for c, k, t in zip(options.rake_on, codes, targets):
            before, after = tvd(weight, k, t), tvd(fit.weights, k, t)
            raking_rows.append(
                {
                    "geography": geo,
                    "attribute": c,
                    "tvd_before": before,
                    "tvd_after": after,
                    "iterations": fit.iterations,
                    "converged": fit.converged,
                }
            )
            metrics[f"raking.tvd_before.{geo}.{c}"] = before
            metrics[f"raking.tvd_after.{geo}.{c}"] = after
        raking = weight if not options.rake_on else fit.weights
        sub = sub.add_column(sub.num_columns - 3, "raking_weight", pa.array(raking, pa.float64()))
        parts.append(sub)
        positions.append(rows)
    return parts, positions


JUDGEMENT_COLUMNS = {"person_id": "string", "round": "int32", "verdict": "string", "raw": "string", "reason": "string"}
RAKING_COLUMNS = {
    "geography": "string",
    "attribute": "string",
    "tvd_before": "float64",
    "tvd_after": "float64",
    "iterations": "int32",
    "converged": "bool",
}


def outputs(options: Options) -> dict[str, Columns]:
    """The input's persons (Big Five traits unless `census.bigfive.mode: none`) plus the added columns; the raking
    report; with a judge, every judge call."""
    out = {
        "data": Columns({**person_columns(options.census.bigfive.mode != "none"), **ADDED_COLUMNS}),
        "raking": Columns(RAKING_COLUMNS),
    }
    if options.judge is not None:
        out["judgements"] = Columns(JUDGEMENT_COLUMNS)
    return out


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts: Path) -> dict:
    """Rejection rates per round over all geographies, persons still flagged, TVD before/after raking."""
    summary: dict[str, Any] = {}
    data = outputs["data"]
    if "judgements" in outputs and options.judge is not None:
        j = outputs["judgements"].to_pandas()
        per_round = {}
        for r, g in j.groupby("round"):
            per_round[f"round{int(r)}"] = {
                "judged": int(len(g)),
                "rejected": int((g["verdict"] == "implausible").sum()),
                "invalid": int((g["verdict"] == "invalid").sum()),
                "rejection_rate": float((g["verdict"] == "implausible").mean()),
            }
        table = data.with_format("arrow")[:]
        flagged = int(np.sum(table.column("flagged").to_numpy()))
        summary["judge"] = {
            "persons": data.num_rows,
            "calls": int(len(j)),
            "rejection_rate": per_round.get("round0", {}).get("rejection_rate", 0.0),
            "rounds": per_round,
            "redrawn": int(np.sum(table.column("judge_rounds").to_numpy() > 0)),
            "still_flagged": flagged,
            "still_flagged_share": flagged / max(data.num_rows, 1),
            "note": "the rejection rate describes the judge as much as the people: a small model flags at random",
        }
    if "raking" in outputs and outputs["raking"].num_rows:
        r = outputs["raking"].to_pandas()
        summary["raking"] = {
            "tvd_before_max": float(r["tvd_before"].max()),
            "tvd_after_max": float(r["tvd_after"].max()),
            "tvd_before_mean": float(r["tvd_before"].mean()),
            "tvd_after_mean": float(r["tvd_after"].mean()),
            "not_converged": sorted(set(r.loc[~r["converged"], "geography"])),
        }
    return summary
