"""Election tables: per-state rows and per-run summaries (styles and baselines) with bootstrap intervals, and each
summary's figures into the comparison tally (`factory.evaluate.compare.Tally`)."""

from __future__ import annotations

import numpy as np

from factory.evaluate import baselines as BL
from factory.evaluate import metrics as M
from factory.evaluate.bootstrap import interval
from factory.evaluate.compare import Tally
from factory.evaluate.presentation import SUMMARY_CI

ALL = "ALL"  # the national row's geography in the aggregates


def tables(
    agg_rows, election_qs, results, state_draws, confidence: float, tally: Tally
) -> tuple[list[dict], list[dict]]:
    """Per-state rows and per-run summaries, styles and baselines, with intervals; figures into the tally.

    `agg_rows`: the evaluate stage's aggregates (shares per model x question x style x mode x geography x
    weighting); `election_qs`: question_id -> (year, dem option, rep option); `state_draws`: (question, model,
    style, mode, weighting) -> state -> bootstrap draws of the two-party share."""
    real = {(int(r["year"]), r["state_po"]): r for r in results.to_dict("records")}
    per_run: dict[tuple, list[dict]] = {}
    for r in agg_rows:
        if r["question_id"] not in election_qs or r["geography"] == ALL:
            continue
        year, dem, rep = election_qs[r["question_id"]]
        share = M.two_party_share(r["shares"], dem, rep)
        if share is None or (year, r["geography"]) not in real:  # no valid answer, or not a state in the results
            continue
        key = (year, r["question_id"], r["model"], r["style"], r["mode"], r["weighting"])
        row = M.state_row(r["geography"], share, real[(year, r["geography"])], year)
        per_run.setdefault(key, []).append({**row, "n_valid": r["n_valid"]})
    # baselines: one set per (year, question, model, mode, weighting), over the states any style simulated
    groups: dict[tuple, set] = {}
    for year, qid, model, _, mode, weighting in per_run:
        groups.setdefault((year, qid, model, mode, weighting), set()).update(
            s["state"] for s in per_run[(year, qid, model, _, mode, weighting)]
        )
    baseline_shares = {}
    for (year, qid, model, mode, weighting), states in groups.items():
        for name, shares in BL.election_shares(results, year, sorted(states)).items():
            baseline_shares[(year, qid, model, name, mode, weighting)] = shares
            rows = [{**M.state_row(s, v, real[(year, s)], year), "n_valid": None} for s, v in shares.items()]
            per_run[(year, qid, model, name, mode, weighting)] = rows
    state_rows, summary_rows = [], []
    fields = ("year", "question_id", "model", "style", "mode", "weighting")
    for key in sorted(per_run):
        year, qid, model, style, mode, weighting = key
        ident = dict(zip(fields, key))
        states = sorted(per_run[key], key=lambda s: s["state"])
        names = [s["state"] for s in states]
        draws = state_draws.get((qid, model, style, mode, weighting))
        matrix = None if draws is None else np.stack([draws[s] for s in names], axis=1)
        for j, s in enumerate(states):
            lo, hi = interval(None if matrix is None else matrix[:, j], confidence)
            state_rows.append({**ident, **s, "ci_low": lo, "ci_high": hi})
        total_votes = {s: float(real[(year, s)]["total_votes"]) for s in names}
        summary = M.summary(states, total_votes)
        figure_draws = None
        if matrix is not None:
            figure_draws = M.summary_draws(
                matrix,
                np.array([s["real_dem_share"] for s in states]),
                [s["real_winner"] for s in states],
                np.array([total_votes[s] for s in names]),
                np.array([s["electoral_votes"] for s in states]),
            )
        for figure, prefix in SUMMARY_CI.items():
            lo, hi = interval(None if figure_draws is None else figure_draws[figure], confidence)
            summary[f"{prefix}_ci_low"], summary[f"{prefix}_ci_high"] = lo, hi
        summary_rows.append({**ident, **summary})
        # the same figures of each baseline over this run's own states: like-for-like comparisons
        versus = {}
        if not BL.is_baseline(style):
            for name in BL.ELECTION:
                shares = baseline_shares.get((year, qid, model, name, mode, weighting))
                if shares is not None and all(s in shares for s in names):
                    rows = [M.state_row(s, shares[s], real[(year, s)], year) for s in names]
                    versus[name] = M.summary(rows, total_votes)
        _tally(tally, (model, style, mode, weighting), year, qid, summary, figure_draws, versus)
    return state_rows, summary_rows


def _tally(tally, key, year, qid, summary, draws, versus) -> None:
    def figures(s, d=None):
        d = d or {}
        ev_error = s["sim_electoral_votes_dem"] - s["real_electoral_votes_dem"]
        return {
            f"election_mae_{year}": (s["mae_state_share"], d.get("mae_state_share")),
            f"election_bias_{year}": (s["signed_bias"], d.get("signed_bias")),
            f"election_national_error_{year}": (
                s["sim_national_dem_share"] - s["real_national_dem_share"],
                None if d.get("sim_national_dem_share") is None
                else d["sim_national_dem_share"] - s["real_national_dem_share"],
            ),
            f"winner_accuracy_{year}": (s["winner_accuracy"], d.get("winner_accuracy")),
            f"electoral_votes_error_{year}": (
                ev_error,
                None if d.get("sim_electoral_votes_dem") is None
                else d["sim_electoral_votes_dem"] - s["real_electoral_votes_dem"],
            ),
        }  # fmt: skip

    paired = {name: {m: v for m, (v, _) in figures(s).items()} for name, s in versus.items()}
    for metric, (value, d) in figures(summary, draws).items():
        tally.add(key, metric, qid, value, d, {name: p[metric] for name, p in paired.items()})
