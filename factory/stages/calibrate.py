"""Calibrate meta personas to the census: an optional LLM plausibility judge with re-draws from the joint, then raking.

Inputs: one meta-persona dataset (`meta_personas`, full mode).
Output (one row per input person, same row order, person_id and columns as the input, plus):
    raking_weight (float64: people represented after raking; sums to the geography's population like `weight`),
    judge_rounds (int32: how many times this row was re-drawn), flagged (bool: still judged implausible after the
    last round), replaced_from (str or null: the person_id whose original attributes were replaced; the original
    row stays in the upstream dataset under that id and nothing of it is copied here)
Extra outputs:
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from factory.census.raking import RAKEABLE
from factory.errors import DataError, did_you_mean
from factory.options import DataDir, DataFile, Options, StageOptions
from factory.stage import StageContext, StageOutput, rows_dataset
from factory.stages.meta_personas import BigFiveOptions

log = logging.getLogger(__name__)

VERSION = 2  # 2: re-draws from the census joint with its crosstabs by race (meta_personas 2)
INPUTS = (1, 1)
PROMPTS = ["calibrate/system.jinja", "calibrate/judge.jinja"]
VERDICTS = ["plausible", "implausible"]
# the full-mode meta persona columns a re-draw must reproduce (Big Five traits are optional)
REQUIRED = (
    "person_id geography geography_id geography_name weight age age_band sex race_ethnicity hispanic race education "
    "school_enrollment marital_status relationship household_type employment_status occupation industry "
    "class_of_worker household_income health_insurance veteran_status language english_ability nativity citizenship"
).split()
ADDED = ("raking_weight", "judge_rounds", "flagged", "replaced_from")
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


class CensusOptions(Options):
    """Which census joint the people were drawn from: the same values as the upstream meta_personas stage."""

    source: Literal["acs2018", "acs2023", "tidy"] = Field("acs2018", description="census source (as meta_personas)")
    census_dir: DataDir | None = Field(None, description="acs2018 source: tables from this folder (as meta_personas)")
    marginals: DataFile | None = Field(None, description="tidy source: the marginals file (as meta_personas)")
    base_geography: str | None = Field(None, description="tidy source: ACS 2018 state seeding the fit")
    min_age: int = Field(18, ge=18, le=99, description="youngest age in the universe (as meta_personas)")
    max_age: int = Field(99, ge=18, le=99, description="oldest age in the universe (as meta_personas)")
    ipf_tolerance: float = Field(1e-6, gt=0, le=0.01, description="IPF tolerance of the fit (as meta_personas)")
    bigfive: BigFiveOptions = Field(
        default_factory=BigFiveOptions, description="census mode: re-drawn persons get fresh traits; else kept"
    )

    @model_validator(mode="after")
    def _consistent(self) -> CensusOptions:
        if self.min_age > self.max_age:
            raise ValueError(f"min_age {self.min_age} is above max_age {self.max_age}")
        if self.source == "tidy" and (self.marginals is None or self.base_geography is None):
            raise ValueError("source 'tidy' needs marginals (the file) and base_geography (an ACS 2018 state)")
        if self.source != "tidy" and self.marginals is not None:
            raise ValueError(f"marginals is only read by source 'tidy', not '{self.source}'")
        if self.census_dir is not None and self.source != "acs2018":
            raise ValueError(f"census_dir is only read by source 'acs2018', not '{self.source}'")
        return self


class JudgeOptions(Options):
    backend: str = Field(..., description="a backend named under `backends:`")
    max_rounds: int = Field(3, ge=0, le=50, description="re-draws per person at most (0: judge only, never redraw)")
    temperature: float = Field(0.0, ge=0, le=2, description="0 = greedy: the verdict depends on the person only")
    max_tokens: int = Field(16, ge=4, le=256, description="room for the verdict word")
    max_retries: int = Field(2, ge=0, le=10, description="re-asks with a fresh seed before an answer is invalid")


class Options(StageOptions):
    judge: JudgeOptions | None = Field(None, description="LLM plausibility judge with re-draws; none: raking only")
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
    def fit(cls, census: CensusOptions, geo: str) -> CensusGeography:
        """Fit the geography's joint as meta_personas does. Fits are kept for the last few geographies of this
        process (plan checks, tests and rebuilds reuse them); the key holds the options and resolved paths, so a
        census file edited in place while one process runs is not noticed."""
        from factory.census import model
        from factory.stages.meta_personas import _source

        paths = tuple(str(p.resolved) for p in (census.census_dir, census.marginals) if p is not None)
        key = (json.dumps(census.model_dump(mode="json", exclude={"bigfive"}), sort_keys=True), paths, geo)
        if key not in _FITS:
            source = _source(census)  # duck-typed: reads source / census_dir / marginals / base_geography
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


def _choice(text: str) -> str:
    from factory.llm.structured import Invalid

    word = text.strip().strip(".").lower()
    if word not in VERDICTS:
        raise Invalid(f"not a verdict: {text[:40]!r}")
    return word


def llm_judge(client: Any, options: JudgeOptions, names: dict, ctx: StageContext, metrics: dict, failures: list):
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
    upstream = _upstream_manifest(people)
    if upstream is not None:
        ours = options.census.model_dump(mode="json")
        theirs = upstream.get("config", {})
        for key in CENSUS_FIELDS:
            if key in theirs and theirs[key] != ours[key]:
                raise DataError(
                    f"stages.{ctx.stage}.census.{key}: {json.dumps(ours[key])} but the input's people were built "
                    f"with {json.dumps(theirs[key])}; the census options must match the upstream meta_personas stage"
                )


def _upstream_manifest(people) -> dict | None:
    """The manifest of the meta_personas stage that wrote the input, when the input is a stored stage output
    (`<stage dir>/data/*.arrow` beside `<stage dir>/manifest.json`); read only to check the census options."""
    for f in getattr(people, "cache_files", None) or []:
        path = Path(f["filename"]).parent.parent / "manifest.json"
        if path.is_file():
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            return manifest if manifest.get("uses") == "meta_personas" else None
    return None


def plan(options: Options, inputs: dict, ctx: StageContext) -> list[dict]:
    """One batch per geography (so each fits its joint once and rakes all its persons together). Rows of a
    geography that are not contiguous merge the geographies in between into one batch, keeping row order."""
    (people,) = inputs.values()
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

    from factory.census.raking import rake, tvd

    (people,) = inputs.values()
    features = people.features
    names = {c: f.names for c, f in features.items() if isinstance(f, ClassLabel)}
    lo, hi = ctx.batch["rows"]
    table = people.with_format("arrow")[lo:hi]
    geo_codes = table.column("geography").to_numpy()
    traits = "openness" in table.column_names
    if traits and options.census.bigfive.mode == "none":
        raise DataError(f"stages.{ctx.stage}.census.bigfive.mode: 'none' but the input has Big Five traits")
    metrics: dict[str, float] = {}
    failures: list[dict] = []
    judgements: list[dict] = []
    raking_rows: list[dict] = []
    from factory.llm.backend import for_stage

    client = for_stage(ctx, options.judge.backend) if options.judge is not None else None
    judge = llm_judge(client, options.judge, names, ctx, metrics, failures) if client is not None else None

    def rng_for(person_id: str, round_: int) -> np.random.Generator:
        return ctx.rng("calibrate", person_id, round_)  # depends on the person and round only, not on batching

    parts, positions = [], []
    for geo in ctx.batch["geographies"]:
        rows = np.flatnonzero(geo_codes == names["geography"].index(geo))
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
    if client is not None:
        metrics["backend_calls"] = float(client.calls)
        metrics["requests_cached"] = float(client.cache.hits if client.cache else 0)
        if client.cache is not None:
            client.cache.close()

    out_features = Features(
        {
            **features,
            "raking_weight": Value("float64"),
            "judge_rounds": Value("int32"),
            "flagged": Value("bool"),
            "replaced_from": Value("string"),
        }
    )
    order = np.argsort(np.concatenate(positions), kind="stable")
    data = pa.concat_tables(parts).take(pa.array(order)).cast(out_features.arrow_schema)
    extras = {"raking": _dataset(raking_rows, RAKING_COLUMNS)}
    if options.judge is not None:
        extras["judgements"] = _dataset(judgements, JUDGEMENT_COLUMNS)
    # an explicit fingerprint: without one, datasets hashes the whole table
    dataset = Dataset(data, info=DatasetInfo(features=out_features), fingerprint=f"calibrate-{ctx.batch_index}")
    return StageOutput(dataset, failures, metrics, extras=extras)


def _features(spec: dict) -> Any:
    from datasets import Features, Value

    return Features({k: Value(v) for k, v in spec.items()})


JUDGEMENT_COLUMNS = {"person_id": "string", "round": "int32", "verdict": "string", "raw": "string", "reason": "string"}
RAKING_COLUMNS = {
    "geography": "string",
    "attribute": "string",
    "tvd_before": "float64",
    "tvd_after": "float64",
    "iterations": "int32",
    "converged": "bool",
}


def _dataset(rows: list[dict], columns: dict):
    return rows_dataset(rows, _features(columns))


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
