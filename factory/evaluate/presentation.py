"""The evaluate stage's manifest summary and card tables: figures as 'value [low, high]', improvements over the
baselines, election summaries; plain functions over the stage's tables (pandas frames and row dicts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factory.evaluate.compare import VS_COLUMNS

SUMMARY_CI = {  # election_summary figure -> the prefix of its interval columns
    "mae_state_share": "mae",
    "winner_accuracy": "winner_accuracy",
    "sim_electoral_votes_dem": "electoral_votes",
    "sim_national_dem_share": "national",
    "signed_bias": "bias",
}


def figures(styles, several_models: bool) -> list[dict]:
    """One record per model x style x mode: each metric as 'value [low, high]' (baselines: the value)."""
    records: dict[tuple, dict] = {}
    for r in styles.itertuples():
        if r.metric == "invalid_share" and r.style.startswith("baseline:"):
            continue
        key = (r.model, r.style, r.mode)
        rec = records.setdefault(key, {**({"model": r.model} if several_models else {}), "style": r.style,
                                       "mode": r.mode})  # fmt: skip
        rec[r.metric] = with_interval(r.value, r.ci_low, r.ci_high)
    ordered = sorted(records.items(), key=lambda kv: (kv[0][0], kv[0][1].startswith("baseline:"), kv[0][1:]))
    return [rec for _, rec in ordered]


def versus_records(df, several_models: bool) -> list[dict]:
    """Per style and metric: the improvement over each baseline and `base` ('+0.031*': * = interval excludes 0)."""
    df = df[df["versus"].isin(list(VS_COLUMNS))]
    records = []
    for (model, style, mode, metric), g in df.groupby(["model", "style", "mode", "metric"], sort=True):
        rec = {**({"model": model} if several_models else {}), "style": style, "mode": mode, "metric": metric}
        for r in g.itertuples():
            rec[r.versus] = f"{r.improvement:+.3g}{'*' if r.significant else ''}"
        records.append(rec)
    return records


def spread_records(df, several_models: bool) -> list[dict]:
    """Per model x style x mode: each metric across replicates as 'mean ± sd (min, max), K replicates'."""
    records: dict[tuple, dict] = {}
    for r in df.itertuples():
        rec = records.setdefault((r.model, r.style, r.mode), {**({"model": r.model} if several_models else {}),
                                                             "style": r.style, "mode": r.mode})  # fmt: skip
        sd = "" if r.sd is None or not np.isfinite(r.sd) else f" ± {r.sd:.3g}"
        rec[r.metric] = f"{r.mean:.4g}{sd} ({r.min:.4g}, {r.max:.4g}), {r.replicates} replicates"
    return [records[k] for k in sorted(records)]


def summary_record(row: dict, several_models: bool) -> dict:
    rec = {k: row[k] for k in ("year", "question_id", "model", "style", "mode", "weighting")}
    if not several_models:
        del rec["model"]
    for figure, prefix in SUMMARY_CI.items():
        rec[figure] = with_interval(row[figure], row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"])
    rec["real_electoral_votes_dem"] = row["real_electoral_votes_dem"]
    rec["real_national_dem_share"] = num(row["real_national_dem_share"])
    return rec


def with_interval(value, low, high) -> str | None:
    """'0.262 [0.241, 0.283]'; the value alone when there is no interval."""
    if value is None or not np.isfinite(value):
        return None
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.4g}"
    return f"{value:.4g} [{low:.4g}, {high:.4g}]"


def num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def card_section(path: Path, **variables) -> None:
    """How to read the tables (baselines, intervals), for the dataset card, from
    card_templates/evaluate_section.md.jinja (its variables are listed at its top)."""
    from factory.prompts import render

    template = Path(__file__).resolve().parents[1] / "card_templates" / "evaluate_section.md.jinja"
    path.write_text(render(template, **variables))
