"""Score simulated answers against ground truth (state election results, Pew OpinionQA answers), by model and
persona style, beside baselines, with bootstrap intervals.

Input roles:
    answers (one or more `answers` stages: person_id, geography, style, question_id, mode, round, choice,
    distribution, valid; several inputs, e.g. different backends, models or persona writers, are told apart by
    their input name, which every output carries as `model`), people (person_id; `weight` / `raking_weight` for
    the population / raked weightings; `citizenship` for the eligible electorate: a `meta_personas` dataset,
    optionally with `raking_weight` from `calibrate`; paper mode, without `age` or `citizenship`, joins no Pew
    group and needs `electorate: adults`), questions (the `questions` stage: question_id, source, text, options;
    ordinal, refusal_index, human_distribution, human_groups and split where present). A listed
    `inputs: [answers, people, questions]` is matched to the roles by their columns.
Output `data`, the aggregates (one row per model x question x style x mode x geography x weighting; geography
"ALL" is the national row over every answer):
    model, question_id, style, mode, geography, weighting (str), n_valid, n_invalid (int64),
    shares (list[float64] over the question's original options; null when no valid answer)
Extra `elections` (election questions only; one row per year x question x model x style x mode x weighting x
state, baselines as styles `baseline:uniform`, `baseline:national`, `baseline:previous_cycle`):
    year (int32), question_id, model, style, mode, weighting, state (str), n_valid (int64; null for baselines),
    sim_dem_share, ci_low, ci_high (the interval of sim_dem_share; null for baselines), real_dem_share, error
    (float64: two-party Democratic shares, error = sim - real), sim_winner, real_winner (str: D | R | tie),
    electoral_votes (int32)
Extra `election_summary` (per year x question x model x style x mode x weighting, baselines included):
    year (int32), question_id, model, style, mode, weighting (str), states (int32), mae_state_share,
    winner_accuracy (float64), sim_electoral_votes_dem, real_electoral_votes_dem, electoral_votes_total (int32),
    sim_national_dem_share, real_national_dem_share, signed_bias (float64; signed_bias is mean sim - real, > 0
    leans Democratic), bias_toward (str: D | R), and the interval of each simulated figure: mae_ci_low,
    mae_ci_high, winner_accuracy_ci_low, winner_accuracy_ci_high, electoral_votes_ci_low, electoral_votes_ci_high,
    national_ci_low, national_ci_high, bias_ci_low, bias_ci_high (float64; null for baselines)
Extra `opinionqa` (questions with human distributions; per question x model x style x mode x weighting, overall
with attribute and group null, then per Pew group the meta persona maps to; baselines `baseline:uniform`,
`baseline:overall_human` (groups only), `baseline:human_groups` as styles):
    question_id, model, style, mode, weighting, split (null without a `split` column in questions), attribute,
    group, n (int64: valid answers; null for baselines), alignment, ci_low, ci_high (its interval), tv (float64;
    null when undefined, see `factory.evaluate.metrics`)
Extra `styles` (the comparison table: one row per model x style x mode x weighting x metric, baselines as rows):
    model, style, mode, weighting, metric, value, ci_low, ci_high (float64), then how much the row beats each
    baseline and the `base` style on that metric, in the metric's units, positive = better: vs_uniform,
    vs_national, vs_previous_cycle, vs_overall_human, vs_human_groups, vs_base (float64; null where not defined).
    Metrics election_mae_<year>, election_bias_<year>, election_national_error_<year>, winner_accuracy_<year>,
    electoral_votes_error_<year> (simulated minus real Democratic electors), opinionqa_alignment, opinionqa_tv,
    opinionqa_group_alignment, opinionqa_alignment_<split>, opinionqa_alignment_topic_<topic> (per question
    topic, for OpinionQA the Pew wave: pew_atp_w26; means over questions), invalid_share (over every
    answer to a choice question; the same under each weighting; no interval)
Extra `comparisons` (paired bootstrap; per model x mode x weighting x metric x style x versus, where versus is a
baseline, `base` or another style of the same model):
    model, mode, weighting, metric, style, versus (str), value, versus_value, improvement, ci_low, ci_high
    (float64: improvement = how much the style is better, in the metric's units, and its interval), beats,
    significant (bool: improvement > 0; the interval excludes 0). With several answer inputs, each style is also
    compared with the same style of every other model: `versus` is `model:<other input name>`.
Extras `replicates` and `replicate_spread` (only with `replicates: K` > 1; sampled modes, not logprob): each
answers `sample` index 0..K-1 scored on its own as one replicate of the whole survey, every `styles` metric per
replicate (baselines left out), and across replicates:
    replicates: model, style, mode, weighting, metric (str), replicate (int32), value (float64)
    replicate_spread: model, style, mode, weighting, metric (str), replicates (int32), mean, sd (sample standard
    deviation; null for one replicate), min, max (float64)
Plots: artifacts/election_map_[<model>_]<style>[_<mode>].png (simulated minus real margin, a panel per year),
artifacts/styles.png (main metrics with intervals, baselines as lines); artifacts/card_section.md says how to read
the tables; the manifest summary holds the election summary and the figures with intervals.

How answers count: each answer row is a probability vector over the question's original options, one-hot at
`choice` for sampled modes and `distribution` in logprob mode; invalid rows add no vector but are counted.
Shares are the weighted mean of the valid vectors. Modes are kept apart (a `mode` key on every output: fast and
logprob answers measure different things). Multi-turn answers count at their last round unless `rounds: all`,
which pools every round. Election questions (source 'election') are matched to the results file by the year in
their text and the candidates' surnames in their options; a state's simulated share is D / (D + R), a tie
(exactly 0.5) wins no electors. OpinionQA: alignment = 1 - W1 / (N - 1) on ordinal positions (Santurkar et al.
2023) and total variation, both after dropping the "Refused" option and options without an ordinal position
from the simulated and the human distribution alike and renormalising the rest; a side left with no mass gives
null (counted in the `opinionqa_null_alignment` metric).
Electorate: election questions count the voting-eligible population (citizens 18+; other people's votes are left
out and counted in `answers_outside_electorate`), or everyone with `electorate: adults` (`evaluate.electorate`).
Weightings: unweighted, population (people.weight), raked (people.raking_weight), turnout (people.weight x the
`turnout:` CSV's rate); plots and the manifest use the last of these requested.
Baselines: `factory.evaluate.baselines`. Intervals: persons resampled within each geography (`bootstrap:` draws,
seeded by the stage seed and the geography; `confidence:` level), the same draws for every figure
(`factory.evaluate.bootstrap`); `bootstrap: 0` gives null intervals.

VERSION 2 (outputs changed): `model` columns (several answer inputs), baseline rows, intervals, `comparisons`,
`vs_*` columns, and elections over the eligible electorate by default (shares move where non-citizens answered).
VERSION 3: intervals on the tile maps, `comparisons` rows of the same style across models (`versus`
`model:<name>`), and `replicates`.

Example:
    stages:
      evaluate:
        uses: evaluate
        inputs: [answers, people, questions]
        weightings: [unweighted, population]
        elections: [2016, 2020, 2024]
        bootstrap: 1000        # draws; 0: no intervals
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from factory.errors import DataError, did_you_mean
from factory.evaluate import baselines as BL
from factory.evaluate import elections, presentation
from factory.evaluate import metrics as M
from factory.evaluate.bootstrap import interval, person_counts, replicate_sums, shares_of
from factory.evaluate.compare import VS_COLUMNS, Tally, tables
from factory.evaluate.elections import ALL
from factory.evaluate.metrics import spread_of
from factory.options import DataFile, StageOptions
from factory.stage import Columns, Needs, StageContext, StageOutput, rows_dataset

VERSION = 3
ANSWER_COLUMNS = ["person_id", "geography", "style", "question_id", "mode", "round", "choice", "distribution", "valid"]
INPUTS = {
    "answers": Needs(*ANSWER_COLUMNS, many=True, description="simulated answers (one or more answers stages)"),
    "people": Needs("person_id", description="who answered, with weight / raking_weight as the weightings ask"),
    "questions": Needs("question_id", "source", "text", "options", description="the questions asked"),
}
_WEIGHT_COLUMN = {"population": "weight", "raked": "raking_weight", "turnout": "weight"}


def inputs(options: Options) -> dict[str, Needs]:
    """The roles for these options: `people` must carry the weights the weightings ask for (raked: calibrate's
    raking_weight) and, for the eligible electorate, citizenship; so a recipe that rakes over uncalibrated people
    fails at validate."""
    needed = dict.fromkeys(_WEIGHT_COLUMN[w] for w in options.weightings if w in _WEIGHT_COLUMN)
    if options.electorate == "eligible":
        needed["citizenship"] = None
    answers = INPUTS["answers"]
    if options.replicates > 1:  # the replicate of each answer is its sample index
        answers = Needs(*ANSWER_COLUMNS, "sample", many=True, description=answers.description)
    people = Needs("person_id", *needed, description=INPUTS["people"].description)
    return {**INPUTS, "answers": answers, "people": people}


_RUN = {"model": "string", "style": "string", "mode": "string", "weighting": "string"}
_CI = {"ci_low": "float64", "ci_high": "float64"}
OUTPUTS = {
    "data": Columns(
        {
            "model": "string",
            "question_id": "string",
            "style": "string",
            "mode": "string",
            "geography": "string",
            "weighting": "string",
            "n_valid": "int64",
            "n_invalid": "int64",
            "shares": "list<float64>",
        }
    ),
    "styles": Columns(
        {**_RUN, "metric": "string", "value": "float64", **_CI, **dict.fromkeys(VS_COLUMNS.values(), "float64")}
    ),
    "comparisons": Columns(
        {
            "model": "string",
            "mode": "string",
            "weighting": "string",
            "metric": "string",
            "style": "string",
            "versus": "string",
            "value": "float64",
            "versus_value": "float64",
            "improvement": "float64",
            **_CI,
            "beats": "bool",
            "significant": "bool",
        }
    ),
    "elections": Columns(
        {
            "year": "int32",
            "question_id": "string",
            **_RUN,
            "state": "string",
            "n_valid": "int64",
            "sim_dem_share": "float64",
            **_CI,
            "real_dem_share": "float64",
            "error": "float64",
            "sim_winner": "string",
            "real_winner": "string",
            "electoral_votes": "int32",
        }
    ),
    "election_summary": Columns(
        {
            "year": "int32",
            "question_id": "string",
            **_RUN,
            "states": "int32",
            "mae_state_share": "float64",
            "winner_accuracy": "float64",
            "sim_electoral_votes_dem": "int32",
            "real_electoral_votes_dem": "int32",
            "electoral_votes_total": "int32",
            "sim_national_dem_share": "float64",
            "real_national_dem_share": "float64",
            "signed_bias": "float64",
            "bias_toward": "string",
            **{f"{p}_ci_{end}": "float64" for p in presentation.SUMMARY_CI.values() for end in ("low", "high")},
        }
    ),
    "replicates": Columns({**_RUN, "metric": "string", "replicate": "int32", "value": "float64"}),
    "replicate_spread": Columns(
        {
            **_RUN,
            "metric": "string",
            "replicates": "int32",
            "mean": "float64",
            "sd": "float64",
            "min": "float64",
            "max": "float64",
        }
    ),
    "opinionqa": Columns(
        {
            "question_id": "string",
            **_RUN,
            "split": "string",
            "attribute": "string",
            "group": "string",
            "n": "int64",
            "alignment": "float64",
            **_CI,
            "tv": "float64",
        }
    ),
}
WEIGHTINGS = ("unweighted", "population", "raked", "turnout")
MAIN_METRICS = r"election_mae_|winner_accuracy_|opinionqa_alignment$|opinionqa_group_alignment$"  # in styles.png
QUESTION_COLUMNS = ("question_id", "source", "topic", "text", "options", "ordinal", "refusal_index",
                    "human_distribution", "human_groups", "split")  # fmt: skip


class Options(StageOptions):
    weightings: list[Literal["unweighted", "population", "raked", "turnout"]] = Field(
        default_factory=lambda: ["unweighted", "population"],
        description="unweighted, population (people.weight), raked (people.raking_weight, from a calibrate stage),"
        " turnout (people.weight x the turnout CSV's rate)",
    )
    elections: list[int] = Field(
        default_factory=lambda: list(M.YEARS), description=f"election years to score ({', '.join(map(str, M.YEARS))})"
    )
    group_attributes: list[str] = Field(
        default_factory=lambda: list(M.GROUP_ATTRIBUTES),
        description=f"Pew groups to compare on OpinionQA: {', '.join(M.GROUP_ATTRIBUTES)}",
    )
    rounds: Literal["last", "all"] = Field(
        "last", description="multi-turn answers: the last round per question and style, or all rounds pooled"
    )
    min_group_n: int = Field(1, ge=1, description="subgroups with fewer valid answers get null alignment and tv")
    electorate: Literal["eligible", "adults"] = Field(
        "eligible",
        description="who votes on election questions: eligible (citizens 18+, from people.citizenship) or adults"
        " (everyone, as the persona-catch study did)",
    )
    turnout: DataFile | None = Field(
        None,
        description="CSV of turnout rates by people columns (e.g. age_band,education,rate) for the turnout"
        " weighting; path relative to the recipe",
        json_schema_extra={"fingerprint": "omit_if_none"},
    )
    bootstrap: int = Field(1000, ge=0, description="bootstrap draws for the intervals (persons resampled within"
                           " each geography); 0: no intervals. Cost grows linearly with it")  # fmt: skip
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the intervals")
    replicates: int = Field(
        1, ge=1, le=1000, description="sampled modes: score each answers sample index 0..K-1 on its own as a "
        "replicate of the survey and report every metric's spread across them (answers need samples >= K)",
    )  # fmt: skip

    @field_validator("weightings")
    @classmethod
    def _weightings(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError("name each weighting once, at least one")
        return value

    @field_validator("elections")
    @classmethod
    def _elections(cls, value: list[int]) -> list[int]:
        for year in value:
            if year not in M.YEARS:
                raise ValueError(f"no results shipped for {year}; known: {', '.join(map(str, M.YEARS))}")
        return value

    @field_validator("group_attributes")
    @classmethod
    def _attributes(cls, value: list[str]) -> list[str]:
        for a in value:
            if a not in M.GROUP_ATTRIBUTES:
                known = ", ".join(M.GROUP_ATTRIBUTES)
                raise ValueError(f"unknown attribute '{a}'{did_you_mean(a, M.GROUP_ATTRIBUTES)}; known: {known}")
        return value

    @model_validator(mode="after")
    def _turnout(self) -> Options:
        if ("turnout" in self.weightings) != (self.turnout is not None):
            raise ValueError("the turnout weighting and a turnout: CSV go together (name both or neither)")
        return self


def files(options: Options) -> list[Path]:
    """The shipped election results: their bytes enter the fingerprint, so a corrected file re-scores."""
    from factory.resources import data_path

    return [data_path(*M.RESULTS_FILE)]


def _answers(sources, rounds: str):
    """One table of every answers input, with its input name as `model`."""
    import pandas as pd

    if not isinstance(sources, dict):  # a single dataset given directly (tests, scripts)
        sources = {"answers": sources}
    frames = []
    for name, ds in sources.items():
        missing = [c for c in ANSWER_COLUMNS if c not in ds.column_names]
        if missing:
            raise DataError(f"answers ({name}): missing column(s) {', '.join(missing)}")
        frames.append(ds.select_columns(ANSWER_COLUMNS).to_pandas().assign(model=name))
    df = pd.concat(frames, ignore_index=True)
    df["choice"] = df["choice"].fillna(-1).astype(np.int64)
    df["round"] = df["round"].fillna(0).astype(np.int64)
    df["valid"] = df["valid"].fillna(False).astype(bool)
    if rounds == "last":
        last = df.groupby(["model", "question_id", "style", "mode"], sort=False)["round"].transform("max")
        df = df[df["round"] == last]
    return df.reset_index(drop=True)


def _labels(df, features, col: str) -> list:
    """A people column's values, ClassLabel codes as their names."""
    from datasets import ClassLabel

    values = df[col].tolist()
    feature = features[col]
    if isinstance(feature, ClassLabel):
        return [None if v is None or v != v else feature.names[int(v)] for v in values]
    return values


def _people(ds, options: Options, stage: str) -> tuple:
    """(person_id index, weight arrays by weighting, Pew group labels by attribute, eligible mask or None)."""
    import pandas as pd
    from datasets import ClassLabel

    if "raked" in options.weightings and "raking_weight" not in ds.column_names:
        raise DataError(
            f"stages.{stage}.weightings: 'raked' needs a raking_weight column in the people input (run calibrate)"
        )
    wanted = {"person_id", "weight", "raking_weight", "citizenship", "age"}
    wanted |= {M.PEOPLE_COLUMN[a] for a in options.group_attributes}
    turnout = "turnout" in options.weightings
    cols = [c for c in ds.column_names if turnout or c in wanted]  # the turnout CSV may name any column
    df = ds.select_columns(cols).to_pandas()
    index = pd.Index(df["person_id"])
    if not index.is_unique:
        raise DataError("people: person_id is not unique")
    weights = {"unweighted": np.ones(len(index))}
    for name, col in (("population", "weight"), ("raked", "raking_weight"), ("turnout", "weight")):
        if name in options.weightings:
            if col not in df:
                raise DataError(f"people: no '{col}' column for the {name} weighting")
            w = df[col].to_numpy(dtype=np.float64, na_value=np.nan)
            if not np.isfinite(w).all() or (w < 0).any():
                raise DataError(f"people.{col}: {int((~np.isfinite(w) | (w < 0)).sum())} missing or negative weights")
            weights[name] = w
    if turnout:
        from factory.evaluate.electorate import turnout_rates

        columns = {c: [None if v is None else str(v) for v in _labels(df, ds.features, c)] for c in cols}
        categories = {c: getattr(ds.features[c], "names", None) if isinstance(ds.features[c], ClassLabel) else None
                      for c in cols}  # fmt: skip
        weights["turnout"] = weights["turnout"] * turnout_rates(options.turnout.resolved, columns, categories)
    groups = {}
    for a in options.group_attributes:
        col = M.PEOPLE_COLUMN[a]
        if col in df:
            groups[a] = np.array(M.pew_group(a, _labels(df, ds.features, col)), dtype=object)
    eligible = None
    if options.electorate == "eligible":
        from factory.evaluate.electorate import eligible as eligible_mask

        citizenship = _labels(df, ds.features, "citizenship") if "citizenship" in df else None
        age = df["age"].to_numpy() if "age" in df else None
        eligible = eligible_mask(citizenship, age, stage)
    return index, weights, groups, eligible


def _codes(*columns) -> tuple[np.ndarray, list[tuple]]:
    """Group code per row for the tuple of columns (-1 where any is null), and each code's key, in first-seen order."""
    import pandas as pd

    n = len(columns[0])
    combined, null = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    for col in columns:  # mixed-radix code of the columns' own codes: no per-row Python
        c, uniques = pd.factorize(np.asarray(col, dtype=object), use_na_sentinel=True)
        null |= c < 0
        combined = combined * (len(uniques) + 1) + np.maximum(c, 0)
    codes = np.full(n, -1, dtype=np.int64)
    keep = np.flatnonzero(~null)
    if len(keep) == 0:
        return codes, []
    codes[keep], uniques = pd.factorize(combined[keep])
    first = keep[np.unique(codes[keep], return_index=True)[1]]
    return codes, [tuple(str(col[i]) for col in columns) for i in first]


def _election_questions(questions: dict, results, years: list[int]) -> tuple[dict, int]:
    """question_id -> (year, dem option index, rep option index); and the count of election questions skipped."""
    found, skipped = {}, 0
    for qid, q in questions.items():
        if q["source"] != "election" or not q["options"]:
            continue
        year = M.election_year(q["text"])
        if year is None:
            skipped += 1
            continue
        if year not in years:
            continue
        rows = results[results["year"] == year]
        dem = M.candidate_option(q["options"], rows["dem_candidate"].mode().iloc[0])
        rep = M.candidate_option(q["options"], rows["rep_candidate"].mode().iloc[0])
        if dem is None or rep is None or dem == rep:
            skipped += 1
            continue
        found[qid] = (year, dem, rep)
    return found, skipped


def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    people_ds, questions_ds = inputs["people"], inputs["questions"]
    df = _answers(inputs["answers"], options.rounds)
    person_index, person_weights, person_groups, eligible = _people(people_ds, options, ctx.stage)
    qcols = [c for c in QUESTION_COLUMNS if c in questions_ds.column_names]
    questions = {q["question_id"]: q for q in questions_ds.select_columns(qcols).to_list()}

    unknown = sorted(set(df["question_id"]) - set(questions))
    if unknown:
        raise DataError(f"answers: {len(unknown)} question id(s) not in the questions input, e.g. '{unknown[0]}'")
    pos = person_index.get_indexer(df["person_id"])
    if (pos < 0).any():
        raise DataError(f"answers: person '{df['person_id'][int(np.argmax(pos < 0))]}' is not in the people input")
    results = M.load_results()
    election_qs, skipped_elections = _election_questions(questions, results, options.elections)
    outside = np.zeros(len(df), dtype=bool)
    if eligible is not None:
        outside = df["question_id"].isin(list(election_qs)).to_numpy() & ~eligible[pos]
        df, pos = df[~outside].reset_index(drop=True), pos[~outside]
    weights = {w: person_weights[w][pos] for w in options.weightings}
    groups = {a: labels[pos] for a, labels in person_groups.items()}

    # the persons who answered, each with a resample count per bootstrap draw (within their geography)
    answered, person = np.unique(pos, return_inverse=True)
    geo_of = np.empty(len(answered), dtype=object)
    geo_of[person] = df["geography"].to_numpy(dtype=object)
    counts = person_counts(geo_of.astype(str), options.bootstrap, lambda g: ctx.rng("bootstrap", g))

    tally = Tally(options.bootstrap)
    agg_rows: list[dict] = []
    oqa_rows: list[dict] = []
    state_draws: dict[tuple, dict[str, np.ndarray]] = {}
    invalid: dict[tuple, list[int]] = {}  # (model, style, mode) -> [rows, invalid]
    skipped_open = 0
    for qid, part in df.groupby("question_id", sort=True):
        q = questions[qid]
        k = len(q["options"] or [])
        if k == 0:  # open questions have no options to share out
            skipped_open += len(part)
            continue
        at = part.index.to_numpy()
        vectors, ok = M.probability_vectors(
            part["choice"].to_numpy(),
            part["distribution"].tolist(),
            part["valid"].to_numpy(),
            (part["mode"] == "logprob").to_numpy(),
            k,
            qid,
        )
        model, style, mode, geo = (part[c].to_numpy(dtype=object) for c in ("model", "style", "mode", "geography"))
        by_geo = _codes(model, style, mode, geo)
        national = _codes(model, style, mode)
        for code, key in enumerate(national[1]):
            c = invalid.setdefault(key, [0, 0])
            c[0] += int((national[0] == code).sum())
            c[1] += int(((national[0] == code) & ~ok).sum())
        for weighting in options.weightings:
            w = weights[weighting][at]
            for codes, keys in (national, by_geo):
                n_valid, n_invalid, wsum, sums = M.group_sums(vectors, ok, w, codes, len(keys))
                for g, key in enumerate(keys):
                    agg_rows.append(
                        {
                            "model": key[0],
                            "question_id": qid,
                            "style": key[1],
                            "mode": key[2],
                            "geography": key[3] if len(key) > 3 else ALL,
                            "weighting": weighting,
                            "n_valid": int(n_valid[g]),
                            "n_invalid": int(n_invalid[g]),
                            "shares": M.shares(wsum[g], sums[g]),
                        }
                    )
            if qid in election_qs and options.bootstrap:
                _, dem, rep = election_qs[qid]
                geo_code = _codes(geo)[0]  # every state's groups lie within it: chunks stay in one state
                draws = replicate_sums(
                    counts, person[at], w, vectors, np.where(ok, by_geo[0], -1), len(by_geo[1]), block=geo_code
                )
                with np.errstate(invalid="ignore", divide="ignore"):
                    two_party = draws[:, :, dem] / (draws[:, :, dem] + draws[:, :, rep])
                for g, key in enumerate(by_geo[1]):
                    state_draws.setdefault((qid, *key[:3], weighting), {})[key[3]] = two_party[:, g]
            if q.get("human_distribution") is not None:
                oqa_rows += _opinionqa(
                    q, options, vectors, ok, w, national, (model, style, mode), groups, at, weighting,
                    (counts, person[at]), tally,
                )  # fmt: skip

    state_rows, summary_rows = elections.tables(agg_rows, election_qs, results, state_draws, options.confidence, tally)
    for (m, s, mo), (n, bad) in invalid.items():
        for weighting in options.weightings:  # the same share under every weighting: one table, easy to pivot
            tally.add((m, s, mo, weighting), "invalid_share", "all", bad / n if n else None)
    style_rows, comparison_rows = tables(tally, options.confidence)

    extras = {
        "styles": rows_dataset(style_rows, OUTPUTS["styles"]),
        "comparisons": rows_dataset(comparison_rows, OUTPUTS["comparisons"]),
    }
    if election_qs:
        extras["elections"] = rows_dataset(state_rows, OUTPUTS["elections"])
        extras["election_summary"] = rows_dataset(summary_rows, OUTPUTS["election_summary"])
    if any(q.get("human_distribution") is not None for q in questions.values()):
        extras["opinionqa"] = rows_dataset(oqa_rows, OUTPUTS["opinionqa"])
    if options.replicates > 1:
        per_replicate, spread = _replicates(options, inputs, ctx)
        extras["replicates"] = rows_dataset(per_replicate, OUTPUTS["replicates"])
        extras["replicate_spread"] = rows_dataset(spread, OUTPUTS["replicate_spread"])
    agg_rows.sort(
        key=lambda r: (
            r["model"], r["question_id"], r["style"], r["mode"], r["weighting"], r["geography"] != ALL, r["geography"]
        )
    )  # fmt: skip
    metrics = {
        "answers": float(len(df)),
        "answers_invalid": float(sum(c[1] for c in invalid.values())),
        "answers_open_skipped": float(skipped_open),
        "answers_outside_electorate": float(outside.sum()),
        "election_questions": float(len(election_qs)),
        "election_questions_skipped": float(skipped_elections),
        "opinionqa_rows": float(sum(not BL.is_baseline(r["style"]) for r in oqa_rows)),
        "opinionqa_null_alignment": float(
            sum(r["alignment"] is None for r in oqa_rows if not BL.is_baseline(r["style"]))
        ),
        "bootstrap_persons": float(len(answered)),
    }
    return StageOutput(rows_dataset(agg_rows, OUTPUTS["data"]), metrics=metrics, extras=extras)


def _replicates(options: Options, inputs: dict, ctx: StageContext) -> tuple[list[dict], list[dict]]:
    """Each sample index 0..K-1 of the sampled-mode answers scored on its own (no bootstrap): every `styles`
    metric per replicate, and each metric's spread across the replicates."""
    sources = inputs["answers"] if isinstance(inputs["answers"], dict) else {"answers": inputs["answers"]}
    once = options.model_copy(update={"replicates": 1, "bootstrap": 0})
    per: list[dict] = []
    for k in range(options.replicates):
        part = {}
        for name, ds in sources.items():
            if "sample" not in ds.column_names:
                raise DataError(f"answers ({name}): no 'sample' column, which replicates: {options.replicates} needs")
            mode, sample = np.asarray(ds["mode"], dtype=object), np.asarray(ds["sample"])
            rows = np.flatnonzero((mode != "logprob") & (sample == k))
            if len(rows):
                part[name] = ds.select(rows)
        if not part:
            raise DataError(
                f"stages.{ctx.stage}.replicates: {options.replicates}, but no sampled answer has sample {k} "
                f"(set samples: {options.replicates} or more on the answers stage)"
            )
        for r in run(once, {**inputs, "answers": part}, ctx).extras["styles"].to_list():
            if not BL.is_baseline(r["style"]) and r["value"] is not None:
                per.append({c: r[c] for c in (*_RUN, "metric", "value")} | {"replicate": k})
    return per, spread_of(per, [*_RUN, "metric"])


def _opinionqa(q, options, vectors, ok, w, national, run_cols, groups, at, weighting, boot, tally) -> list[dict]:
    """Overall and per-group rows of one question under one weighting, with intervals, and its baselines."""
    counts, person = boot
    human_groups: dict[str, dict[str, list[float]]] = {}
    for g in q.get("human_groups") or []:
        human_groups.setdefault(g["attribute"], {})[g["group"]] = g["counts"]
    scored = {}  # the groups rows are written for: attribute -> group -> human counts
    for attribute in options.group_attributes:
        if attribute in groups and attribute in human_groups:
            mapped = set(M.PEW_GROUPS[attribute].values()) if attribute != "AGE" else {g for *_, g in M.AGE_GROUPS}
            scored[attribute] = {g: c for g, c in human_groups[attribute].items() if g in mapped}
    qid, split = q["question_id"], q.get("split")
    topic = _safe(q.get("topic") or "").strip("_").casefold()  # OpinionQA: the Pew wave ("pew_atp_w26")
    ordinal, refusal = q["ordinal"], q["refusal_index"]
    base = {"question_id": qid, "weighting": weighting, "split": split}
    baseline_rows = BL.opinionqa_rows(q, scored)
    versus = {}  # (attribute, group) -> baseline -> alignment
    for b in baseline_rows:
        versus.setdefault((b["attribute"], b["group"]), {})[b["style"]] = b["alignment"]
    rows = []

    def add(run, attribute, group, n, sim, draws, human):
        alignment, tv = (None, None) if sim is None else M.compare(sim, human, ordinal, refusal)
        a_draws = tv_draws = None
        if draws is not None and sim is not None:
            a_draws, tv_draws = M.compare_many(draws, human, ordinal, refusal)
        lo, hi = interval(a_draws, options.confidence) if alignment is not None else (None, None)
        model, style, mode = run
        rows.append(
            {
                **base,
                "model": model,
                "style": style,
                "mode": mode,
                "attribute": attribute,
                "group": group,
                "n": n,
                "alignment": alignment,
                "ci_low": lo,
                "ci_high": hi,
                "tv": tv,
            }
        )
        key, paired = (model, style, mode, weighting), versus.get((attribute, group), {})
        if attribute is None:
            tally.add(key, "opinionqa_alignment", qid, alignment, a_draws, paired)
            tally.add(key, "opinionqa_tv", qid, tv, tv_draws)
            if split is not None:
                tally.add(key, f"opinionqa_alignment_{split}", qid, alignment, a_draws, paired)
            if topic:
                tally.add(key, f"opinionqa_alignment_topic_{topic}", qid, alignment, a_draws, paired)
        else:
            tally.add(key, "opinionqa_group_alignment", (qid, attribute, group), alignment, a_draws, paired)

    codes, keys = national
    n_valid, _, wsum, sums = M.group_sums(vectors, ok, w, codes, len(keys))
    draws = None
    if options.bootstrap:
        draws = shares_of(replicate_sums(counts, person, w, vectors, np.where(ok, codes, -1), len(keys)))
    for g, run in enumerate(keys):
        sim = M.shares(wsum[g], sums[g])
        add(run, None, None, int(n_valid[g]), sim, None if draws is None else draws[:, g], q["human_distribution"])
    for attribute, by_group in scored.items():
        sub_codes, sub_keys = _codes(*run_cols, groups[attribute][at])
        n_sub, _, ws, sm = M.group_sums(vectors, ok, w, sub_codes, len(sub_keys))
        sub_draws = None
        if options.bootstrap:
            sub_draws = shares_of(
                replicate_sums(counts, person, w, vectors, np.where(ok, sub_codes, -1), len(sub_keys))
            )
        where = {key: i for i, key in enumerate(sub_keys)}
        for run in keys:
            for group, human in sorted(by_group.items()):
                i = where.get((*run, group))
                n = 0 if i is None else int(n_sub[i])
                sim = None if i is None or n < options.min_group_n else M.shares(ws[i], sm[i])
                add(run, attribute, group, n, sim, None if sub_draws is None or i is None else sub_draws[:, i], human)
    for model, mode in dict.fromkeys((r[0], r[2]) for r in keys):
        for b in baseline_rows:
            rows.append({**base, **b, "model": model, "mode": mode, "n": None, "ci_low": None, "ci_high": None})
            key = (model, b["style"], mode, weighting)
            if b["attribute"] is None:
                tally.add(key, "opinionqa_alignment", qid, b["alignment"])
                tally.add(key, "opinionqa_tv", qid, b["tv"])
                if split is not None:
                    tally.add(key, f"opinionqa_alignment_{split}", qid, b["alignment"])
                if topic:
                    tally.add(key, f"opinionqa_alignment_topic_{topic}", qid, b["alignment"])
            else:
                tally.add(key, "opinionqa_group_alignment", (qid, b["attribute"], b["group"]), b["alignment"])
    return rows


def headline_weighting(options: Options) -> str:
    """The weighting the plots and the manifest show: the most calibrated one requested."""
    return next(w for w in reversed(WEIGHTINGS) if w in options.weightings)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts: Path) -> dict:
    from factory.evaluate import plots

    weighting = headline_weighting(options)
    out: dict = {"weighting": weighting, "plots": []}
    styles = outputs["styles"].to_pandas() if "styles" in outputs else None
    several_models = styles is not None and styles["model"].nunique() > 1
    if "election_summary" in outputs:
        out["election_summary"] = [
            presentation.summary_record(r, several_models) for r in outputs["election_summary"].to_list()
        ]
    if "elections" in outputs and outputs["elections"].num_rows:
        df = outputs["elections"].to_pandas()
        df = df[(df["weighting"] == weighting) & ~df["style"].str.startswith("baseline:")]
        several_modes = df["mode"].nunique() > 1
        for (model, style, mode), part in df.groupby(["model", "style", "mode"], sort=True):
            panels, spans = {}, {}
            for year, rows in part.groupby("year", sort=True):
                rows = rows[rows["question_id"] == rows["question_id"].min()]  # one question per year on a map
                # D - R margin in points is 100 * (2 * share - 1), so sim - real margin = 200 * (sim - real share)
                panels[int(year)] = {st: 200.0 * e for st, e in zip(rows["state"], rows["error"])}
                spans[int(year)] = {
                    r.state: (200.0 * (r.ci_low - r.real_dem_share), 200.0 * (r.ci_high - r.real_dem_share))
                    for r in rows.itertuples()
                    if r.ci_low == r.ci_low and r.ci_high == r.ci_high and r.ci_low is not None
                }
            name = "election_map_" + "_".join(
                _safe(x) for x in ([model] if several_models else []) + [style] + ([mode] if several_modes else [])
            ) + ".png"  # fmt: skip
            who = f"{model} / {style}" if several_models else style
            title = f"{who} ({mode}, {weighting}): simulated - real margin"
            plots.election_map(panels, artifacts / name, title, intervals={y: v for y, v in spans.items() if v})
            out["plots"].append(f"artifacts/{name}")
    if "opinionqa" in outputs and outputs["opinionqa"].num_rows:
        df = outputs["opinionqa"].to_pandas()
        df = df[df["attribute"].isna()]
        out["opinionqa"] = [
            {
                **({"model": m} if several_models else {}),
                "style": s,
                "mode": mo,
                "weighting": w,
                "questions": int(g["alignment"].notna().sum()),
                "alignment": presentation.with_interval(g["alignment"].mean(), None, None),
                "tv": presentation.num(g["tv"].mean()),
            }
            for (m, s, mo, w), g in df.groupby(["model", "style", "mode", "weighting"], sort=True)
        ]
    if styles is not None and len(styles):
        styles = styles[styles["weighting"] == weighting]
        out["figures"] = presentation.figures(styles, several_models)
        comparisons = outputs["comparisons"].to_pandas() if "comparisons" in outputs else None
        if comparisons is not None and len(comparisons):
            out["versus_baselines"] = presentation.versus_records(
                comparisons[comparisons["weighting"] == weighting], several_models
            )
        main = styles[styles["metric"].str.match(MAIN_METRICS)]
        several_modes = main["mode"].nunique() > 1
        series: dict[str, dict[str, float]] = {}
        spans: dict[str, dict[str, tuple]] = {}
        lines: dict[str, dict[str, float]] = {}
        for r in main.itertuples():
            who = f"{r.model} / {r.style}" if several_models else r.style
            label = f"{who} / {r.mode}" if several_modes else who
            if r.style.startswith("baseline:"):
                lines.setdefault(r.style, {})[r.metric] = r.value
                continue
            series.setdefault(label, {})[r.metric] = r.value
            spans.setdefault(label, {})[r.metric] = (r.ci_low, r.ci_high)
        if series:
            title = f"Persona styles compared ({weighting} weighting; bars: {options.confidence:.0%} intervals)"
            plots.styles_chart(series, artifacts / "styles.png", title, intervals=spans, baselines=lines)
            out["plots"].append("artifacts/styles.png")
    if "replicate_spread" in outputs and outputs["replicate_spread"].num_rows:
        spread = outputs["replicate_spread"].to_pandas()
        spread = spread[(spread["weighting"] == weighting) & spread["metric"].str.match(MAIN_METRICS)]
        out["replicate_spread"] = presentation.spread_records(spread, several_models)
    presentation.card_section(
        artifacts / "card_section.md",
        weighting=weighting,
        draws=options.bootstrap,
        level=f"{options.confidence:.0%}",
        electorate=options.electorate,
        elections=bool(out.get("election_summary")),
        opinionqa=bool(out.get("opinionqa")),
        replicates=options.replicates,
    )
    out["card_section"] = "artifacts/card_section.md"
    return out
