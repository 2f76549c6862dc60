"""Score simulated answers against ground truth (state election results, Pew OpinionQA answers), by persona style.

Input roles:
    answers (the `answers` stage: person_id, geography, style, question_id, mode, round, choice, distribution,
    valid), people (person_id, and `weight` / `raking_weight` for the population / raked weightings: a
    `meta_personas` dataset, optionally with `raking_weight` from `calibrate`; paper mode, without `age`, joins no
    Pew group), questions (the `questions` stage: question_id, source, text, options; ordinal, refusal_index,
    human_distribution, human_groups and split where present). A listed `inputs: [answers, people, questions]`
    is matched to the roles by their columns.
Output `data`, the aggregates (one row per question x style x mode x geography x weighting; geography "ALL" is
the national row over every answer):
    question_id, style, mode, geography, weighting (str), n_valid, n_invalid (int64),
    shares (list[float64] over the question's original options; null when no valid answer)
Extra `elections` (election questions only; one row per year x question x style x mode x weighting x state):
    year (int32), question_id, style, mode, weighting, state (str), n_valid (int64), sim_dem_share,
    real_dem_share, error (float64: two-party Democratic shares, error = sim - real), sim_winner, real_winner
    (str: D | R | tie), electoral_votes (int32)
Extra `election_summary` (per year x question x style x mode x weighting):
    year (int32), question_id, style, mode, weighting (str), states (int32), mae_state_share, winner_accuracy
    (float64), sim_electoral_votes_dem, real_electoral_votes_dem, electoral_votes_total (int32),
    sim_national_dem_share, real_national_dem_share, signed_bias (float64; signed_bias is mean sim - real, > 0
    leans Democratic), bias_toward (str: D | R)
Extra `opinionqa` (questions with human distributions; per question x style x mode x weighting, overall with
attribute and group null, then per Pew group the meta persona maps to):
    question_id, style, mode, weighting, split (null without a `split` column in questions), attribute, group,
    n (int64: valid answers), alignment, tv (float64; null when undefined, see `factory.evaluate.metrics`)
Extra `styles` (the persona-style comparison; one row per style x mode x weighting x metric):
    style, mode, weighting, metric, value (float64); metrics election_mae_<year>, election_bias_<year>,
    election_national_error_<year>, winner_accuracy_<year>, opinionqa_alignment, opinionqa_tv,
    opinionqa_group_alignment, opinionqa_alignment_<split> (means over questions), invalid_share (over every
    answer to a choice question; the same under each weighting)
Plots: artifacts/election_map_<style>.png (tile-grid map of simulated minus real margin, one panel per year;
`_<mode>` is appended when answers hold several modes) and artifacts/styles.png; the manifest summary holds the
election summary and per-style OpinionQA means.

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
Weightings: unweighted (each answer counts 1), population (people.weight) and raked (people.raking_weight). Plots
and the manifest use the most calibrated weighting requested (raked, else population, else unweighted).

Example:
    stages:
      evaluate:
        uses: evaluate
        inputs: [answers, people, questions]
        weightings: [unweighted, population]
        elections: [2016, 2020, 2024]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from factory.errors import DataError, did_you_mean
from factory.evaluate import metrics as M
from factory.options import StageOptions
from factory.stage import Columns, Needs, StageContext, StageOutput, rows_dataset

VERSION = 1
ANSWER_COLUMNS = ["person_id", "geography", "style", "question_id", "mode", "round", "choice", "distribution", "valid"]
INPUTS = {
    "answers": Needs(*ANSWER_COLUMNS, description="simulated answers (the answers stage)"),
    "people": Needs("person_id", description="who answered, with weight / raking_weight as the weightings ask"),
    "questions": Needs("question_id", "source", "text", "options", description="the questions asked"),
}
_WEIGHT_COLUMN = {"population": "weight", "raked": "raking_weight"}


def inputs(options: Options) -> dict[str, Needs]:
    """The roles for these options: `people` must carry the weights the weightings ask for (raked: calibrate's
    raking_weight), so a recipe that rakes over uncalibrated people fails at validate."""
    weights = [_WEIGHT_COLUMN[w] for w in options.weightings if w in _WEIGHT_COLUMN]
    return {**INPUTS, "people": Needs("person_id", *weights, description=INPUTS["people"].description)}


_RUN = {"style": "string", "mode": "string", "weighting": "string"}
OUTPUTS = {
    "data": Columns(
        {
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
    "styles": Columns({**_RUN, "metric": "string", "value": "float64"}),
    "elections": Columns(
        {
            "year": "int32",
            "question_id": "string",
            **_RUN,
            "state": "string",
            "n_valid": "int64",
            "sim_dem_share": "float64",
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
            "tv": "float64",
        }
    ),
}
ALL = "ALL"
WEIGHTINGS = ("unweighted", "population", "raked")
MAIN_METRICS = r"election_mae_|winner_accuracy_|opinionqa_alignment$|opinionqa_tv$|invalid_share$"  # in styles.png
QUESTION_COLUMNS = ("question_id", "source", "text", "options", "ordinal", "refusal_index", "human_distribution",
                    "human_groups", "split")  # fmt: skip


class Options(StageOptions):
    weightings: list[Literal["unweighted", "population", "raked"]] = Field(
        default_factory=lambda: ["unweighted", "population"],
        description="unweighted, population (people.weight), raked (people.raking_weight, from a calibrate stage)",
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


def files(options: Options) -> list[Path]:
    """The shipped election results: their bytes enter the fingerprint, so a corrected file re-scores."""
    from factory.resources import data_path

    return [data_path(*M.RESULTS_FILE)]


def _answers(ds, rounds: str):
    missing = [c for c in ANSWER_COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(f"answers: missing column(s) {', '.join(missing)}")
    df = ds.select_columns(ANSWER_COLUMNS).to_pandas()
    df["choice"] = df["choice"].fillna(-1).astype(np.int64)
    df["round"] = df["round"].fillna(0).astype(np.int64)
    df["valid"] = df["valid"].fillna(False).astype(bool)
    if rounds == "last":
        last = df.groupby(["question_id", "style", "mode"], sort=False)["round"].transform("max")
        df = df[df["round"] == last]
    return df.reset_index(drop=True)


def _people(ds, options: Options, stage: str) -> tuple:
    """(person_id -> position index, weight arrays by weighting, Pew group labels by attribute)."""
    import pandas as pd
    from datasets import ClassLabel

    if "raked" in options.weightings and "raking_weight" not in ds.column_names:
        raise DataError(
            f"stages.{stage}.weightings: 'raked' needs a raking_weight column in the people input (run calibrate)"
        )
    weight_cols = [c for c in ("weight", "raking_weight") if c in ds.column_names]
    attrs = [a for a in options.group_attributes if M.PEOPLE_COLUMN[a] in ds.column_names]
    cols = ["person_id", *weight_cols, *{M.PEOPLE_COLUMN[a] for a in attrs}]
    df = ds.select_columns(cols).to_pandas()
    index = pd.Index(df["person_id"])
    if not index.is_unique:
        raise DataError("people: person_id is not unique")
    weights = {"unweighted": np.ones(len(df))}
    for name, col in (("population", "weight"), ("raked", "raking_weight")):
        if name in options.weightings:
            if col not in df:
                raise DataError(f"people: no '{col}' column for the {name} weighting")
            w = df[col].to_numpy(dtype=np.float64, na_value=np.nan)
            if not np.isfinite(w).all() or (w < 0).any():
                raise DataError(f"people.{col}: {int((~np.isfinite(w) | (w < 0)).sum())} missing or negative weights")
            weights[name] = w
    groups = {}
    for a in attrs:
        col = M.PEOPLE_COLUMN[a]
        feature = ds.features[col]
        values = df[col].tolist()
        if isinstance(feature, ClassLabel):
            values = [None if v is None or v != v else feature.names[int(v)] for v in values]
        groups[a] = np.array(M.pew_group(a, values), dtype=object)
    return index, weights, groups


def _codes(*columns) -> tuple[np.ndarray, list[tuple]]:
    """Group code per row for the tuple of columns (-1 where any is null), and each code's key, in first-seen order."""
    import pandas as pd

    keys = ["\x1f".join(t) if all(isinstance(v, str) for v in t) else None for t in zip(*columns)]
    codes, uniques = pd.factorize(np.array(keys, dtype=object), use_na_sentinel=True)
    return codes.astype(np.int64), [tuple(u.split("\x1f")) for u in uniques]


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
    answers_ds, people_ds, questions_ds = inputs["answers"], inputs["people"], inputs["questions"]
    df = _answers(answers_ds, options.rounds)
    person_index, person_weights, person_groups = _people(people_ds, options, ctx.stage)
    qcols = [c for c in QUESTION_COLUMNS if c in questions_ds.column_names]
    questions = {q["question_id"]: q for q in questions_ds.select_columns(qcols).to_list()}

    unknown = sorted(set(df["question_id"]) - set(questions))
    if unknown:
        raise DataError(f"answers: {len(unknown)} question id(s) not in the questions input, e.g. '{unknown[0]}'")
    pos = person_index.get_indexer(df["person_id"])
    if (pos < 0).any():
        raise DataError(f"answers: person '{df['person_id'][int(np.argmax(pos < 0))]}' is not in the people input")
    weights = {w: person_weights[w][pos] for w in options.weightings}
    groups = {a: labels[pos] for a, labels in person_groups.items()}

    agg_rows: list[dict] = []
    oqa_rows: list[dict] = []
    counts: dict[tuple, list[int]] = {}  # (style, mode) -> [rows, invalid]
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
        style, mode, geo = (part[c].to_numpy(dtype=object) for c in ("style", "mode", "geography"))
        by_geo = _codes(style, mode, geo)
        national = _codes(style, mode)
        for code, (s, m) in enumerate(national[1]):
            c = counts.setdefault((s, m), [0, 0])
            c[0] += int((national[0] == code).sum())
            c[1] += int(((national[0] == code) & ~ok).sum())
        for weighting in options.weightings:
            w = weights[weighting][at]
            for codes, keys in (national, by_geo):
                n_valid, n_invalid, wsum, sums = M.group_sums(vectors, ok, w, codes, len(keys))
                for g, key in enumerate(keys):
                    agg_rows.append(
                        {
                            "question_id": qid,
                            "style": key[0],
                            "mode": key[1],
                            "geography": key[2] if len(key) > 2 else ALL,
                            "weighting": weighting,
                            "n_valid": int(n_valid[g]),
                            "n_invalid": int(n_invalid[g]),
                            "shares": M.shares(wsum[g], sums[g]),
                        }
                    )
            if q.get("human_distribution") is not None:
                oqa_rows += _opinionqa(q, options, vectors, ok, w, national, style, mode, groups, at, weighting)

    results = M.load_results()
    election_qs, skipped_elections = _election_questions(questions, results, options.elections)
    state_rows, summary_rows = _elections(agg_rows, election_qs, results)
    style_rows = _styles(options, counts, summary_rows, oqa_rows)

    extras = {"styles": rows_dataset(style_rows, OUTPUTS["styles"])}
    if election_qs:
        extras["elections"] = rows_dataset(state_rows, OUTPUTS["elections"])
        extras["election_summary"] = rows_dataset(summary_rows, OUTPUTS["election_summary"])
    if any(q.get("human_distribution") is not None for q in questions.values()):
        extras["opinionqa"] = rows_dataset(oqa_rows, OUTPUTS["opinionqa"])
    agg_rows.sort(
        key=lambda r: (r["question_id"], r["style"], r["mode"], r["weighting"], r["geography"] != ALL, r["geography"])
    )
    metrics = {
        "answers": float(len(df)),
        "answers_invalid": float(sum(c[1] for c in counts.values())),
        "answers_open_skipped": float(skipped_open),
        "election_questions": float(len(election_qs)),
        "election_questions_skipped": float(skipped_elections),
        "opinionqa_rows": float(len(oqa_rows)),
        "opinionqa_null_alignment": float(sum(r["alignment"] is None for r in oqa_rows)),
    }
    return StageOutput(rows_dataset(agg_rows, OUTPUTS["data"]), metrics=metrics, extras=extras)


def _opinionqa(q, options, vectors, ok, w, national, style, mode, groups, at, weighting) -> list[dict]:
    """Overall and per-group comparison rows of one question under one weighting."""
    human_groups: dict[str, dict[str, list[float]]] = {}
    for g in q.get("human_groups") or []:
        human_groups.setdefault(g["attribute"], {})[g["group"]] = g["counts"]
    base = {"question_id": q["question_id"], "weighting": weighting, "split": q.get("split")}
    rows = []
    codes, keys = national
    n_valid, _, wsum, sums = M.group_sums(vectors, ok, w, codes, len(keys))
    for g, (s, m) in enumerate(keys):
        sim = M.shares(wsum[g], sums[g])
        alignment, tv = (
            (None, None) if sim is None else M.compare(sim, q["human_distribution"], q["ordinal"], q["refusal_index"])
        )
        rows.append(
            {
                **base,
                "style": s,
                "mode": m,
                "attribute": None,
                "group": None,
                "n": int(n_valid[g]),
                "alignment": alignment,
                "tv": tv,
            }
        )
    for attribute in options.group_attributes:
        if attribute not in groups or attribute not in human_groups:
            continue
        mapped = set(M.PEW_GROUPS[attribute].values()) if attribute != "AGE" else {g for *_, g in M.AGE_GROUPS}
        sub_codes, sub_keys = _codes(style, mode, groups[attribute][at])
        n_sub, _, ws, sm = M.group_sums(vectors, ok, w, sub_codes, len(sub_keys))
        where = {key: i for i, key in enumerate(sub_keys)}
        for s, m in keys:
            for group, human in sorted(human_groups[attribute].items()):
                if group not in mapped:  # "Refused" and other groups no persona maps to
                    continue
                i = where.get((s, m, group))
                n = 0 if i is None else int(n_sub[i])
                sim = None if i is None or n < options.min_group_n else M.shares(ws[i], sm[i])
                alignment, tv = (None, None) if sim is None else M.compare(sim, human, q["ordinal"], q["refusal_index"])
                rows.append(
                    {
                        **base,
                        "style": s,
                        "mode": m,
                        "attribute": attribute,
                        "group": group,
                        "n": n,
                        "alignment": alignment,
                        "tv": tv,
                    }
                )
    return rows


def _elections(agg_rows: list[dict], election_qs: dict, results) -> tuple[list[dict], list[dict]]:
    real = {(int(r["year"]), r["state_po"]): r for r in results.to_dict("records")}
    per_run: dict[tuple, list[dict]] = {}
    for r in agg_rows:
        if r["question_id"] not in election_qs or r["geography"] == ALL:
            continue
        year, dem, rep = election_qs[r["question_id"]]
        share = M.two_party_share(r["shares"], dem, rep)
        if share is None or (year, r["geography"]) not in real:  # no valid answer, or not a state in the results
            continue
        key = (year, r["question_id"], r["style"], r["mode"], r["weighting"])
        row = M.state_row(r["geography"], share, real[(year, r["geography"])], year)
        per_run.setdefault(key, []).append({**row, "n_valid": r["n_valid"]})
    state_rows, summary_rows = [], []
    for key in sorted(per_run):
        year = key[0]
        ident = dict(zip(("year", "question_id", "style", "mode", "weighting"), key))
        states = sorted(per_run[key], key=lambda s: s["state"])
        state_rows += [{**ident, **s} for s in states]
        total_votes = {s: float(real[(year, s)]["total_votes"]) for s in (x["state"] for x in states)}
        summary_rows.append({**ident, **M.summary(states, total_votes)})
    return state_rows, summary_rows


def _styles(options: Options, counts: dict, summary_rows: list[dict], oqa_rows: list[dict]) -> list[dict]:
    """The persona-style comparison table: one value per style x mode x weighting x metric."""
    values: dict[tuple, dict[str, list[float]]] = {}

    def add(style, mode, weighting, metric, value):
        if value is not None:
            values.setdefault((style, mode, weighting), {}).setdefault(metric, []).append(float(value))

    for r in summary_rows:  # several questions for one year (user variants) average
        args = (r["style"], r["mode"], r["weighting"])
        add(*args, f"election_mae_{r['year']}", r["mae_state_share"])
        add(*args, f"election_bias_{r['year']}", r["signed_bias"])
        add(*args, f"election_national_error_{r['year']}", r["sim_national_dem_share"] - r["real_national_dem_share"])
        add(*args, f"winner_accuracy_{r['year']}", r["winner_accuracy"])
    for r in oqa_rows:
        args = (r["style"], r["mode"], r["weighting"])
        if r["attribute"] is None:
            add(*args, "opinionqa_alignment", r["alignment"])
            add(*args, "opinionqa_tv", r["tv"])
            if r["split"] is not None:
                add(*args, f"opinionqa_alignment_{r['split']}", r["alignment"])
        else:
            add(*args, "opinionqa_group_alignment", r["alignment"])
    for (style, mode), (n, invalid) in counts.items():
        for weighting in options.weightings:  # the same share under every weighting: one table, easy to pivot
            add(style, mode, weighting, "invalid_share", invalid / n if n else None)
    rows = [
        {"style": k[0], "mode": k[1], "weighting": k[2], "metric": metric, "value": float(np.mean(v))}
        for k, metrics in values.items()
        for metric, v in metrics.items()
    ]
    return sorted(rows, key=lambda r: (r["style"], r["mode"], r["weighting"], r["metric"]))


def headline_weighting(options: Options) -> str:
    """The weighting the plots and the manifest show: the most calibrated one requested."""
    return next(w for w in reversed(WEIGHTINGS) if w in options.weightings)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts: Path) -> dict:
    from factory.evaluate import plots

    weighting = headline_weighting(options)
    out: dict = {"weighting": weighting, "plots": []}
    if "election_summary" in outputs:
        out["election_summary"] = [_rounded(r) for r in outputs["election_summary"].to_list()]
    if "elections" in outputs and outputs["elections"].num_rows:
        df = outputs["elections"].to_pandas()
        df = df[df["weighting"] == weighting]
        several_modes = df["mode"].nunique() > 1
        for (style, mode), part in df.groupby(["style", "mode"], sort=True):
            panels = {}
            for year, rows in part.groupby("year", sort=True):
                rows = rows[rows["question_id"] == rows["question_id"].min()]  # one question per year on a map
                # D - R margin in points is 100 * (2 * share - 1), so sim - real margin = 200 * (sim - real share)
                panels[int(year)] = {st: 200.0 * e for st, e in zip(rows["state"], rows["error"])}
            name = f"election_map_{_safe(style)}{'_' + _safe(mode) if several_modes else ''}.png"
            plots.election_map(panels, artifacts / name, f"{style} ({mode}, {weighting}): simulated - real margin")
            out["plots"].append(f"artifacts/{name}")
    if "opinionqa" in outputs and outputs["opinionqa"].num_rows:
        df = outputs["opinionqa"].to_pandas()
        df = df[df["attribute"].isna()]
        out["opinionqa"] = [
            {
                "style": s,
                "mode": m,
                "weighting": w,
                "questions": int(len(g)),
                "alignment_null": int(g["alignment"].isna().sum()),
                "alignment": _num(g["alignment"].mean()),
                "tv": _num(g["tv"].mean()),
            }
            for (s, m, w), g in df.groupby(["style", "mode", "weighting"], sort=True)
        ]
    styles = outputs["styles"].to_pandas() if "styles" in outputs else None
    if styles is not None and len(styles):
        styles = styles[styles["weighting"] == weighting]
        main = styles[styles["metric"].str.match(MAIN_METRICS)]
        several_modes = main["mode"].nunique() > 1
        series: dict[str, dict[str, float]] = {}
        for r in main.itertuples():
            label = f"{r.style} / {r.mode}" if several_modes else r.style
            series.setdefault(label, {})[r.metric] = r.value
        if series:
            plots.styles_chart(series, artifacts / "styles.png", f"Persona styles compared ({weighting} weighting)")
            out["plots"].append("artifacts/styles.png")
    return out


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def _rounded(row: dict) -> dict:
    return {k: _num(v) if isinstance(v, float) else v for k, v in row.items()}
