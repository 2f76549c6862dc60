"""The comparison tables: each figure's mean over items with its interval, baselines beside the styles, and how
much each style beats each baseline, each other style and the same style on each other model (paired
bootstrap: every figure uses the same person draws).

A `Tally` collects, per run key (model, style, mode, weighting) and metric, the items a figure averages over
(questions, (question, group) pairs, an election's questions) with their point values, the bootstrap draws of the
mean, and for each baseline its value on the same items, so "style vs baseline" compares like with like even
when a style lacks an item. Improvements are signed so that positive always means the style is better: lower
error (MAE, tv), higher accuracy or alignment, or closer to zero for signed errors (bias, national error,
electoral-vote error). Baselines are fixed (they do not depend on the simulated persons), so a style-vs-baseline
interval is the style's own interval shifted; style-vs-style intervals come from the paired draws.
"""

from __future__ import annotations

import numpy as np

from factory.evaluate.baselines import ALL as BASELINES
from factory.evaluate.baselines import is_baseline
from factory.evaluate.bootstrap import interval

BASE = "base"  # the answers stage's style with no persona: compared like a baseline (vs_base)
MODEL = "model:"  # `versus` for the same style on another model (answers input)
VS_COLUMNS = {name: "vs_" + name.split(":", 1)[1] for name in BASELINES} | {BASE: "vs_base"}


def direction(metric: str) -> str | None:
    """'lower', 'higher' or 'zero' (closer to 0 is better); None: not a figure one style beats another on."""
    if metric.startswith(("election_mae_", "opinionqa_tv")):
        return "lower"
    if metric.startswith(("winner_accuracy_", "opinionqa_alignment", "opinionqa_group_alignment")):
        return "higher"
    if metric.startswith(("election_bias_", "election_national_error_", "electoral_votes_error_")):
        return "zero"
    return None


def improvement(metric: str, value, versus):
    """How much better `value` is than `versus` on this metric (arrays work too); positive: `value` is better."""
    kind = direction(metric)
    if kind == "higher":
        return value - versus
    if kind == "lower":
        return versus - value
    return np.abs(versus) - np.abs(value)


class Tally:
    def __init__(self, draws: int):
        self.draws = draws
        self.points: dict[tuple, dict] = {}  # (key, metric) -> item -> value
        self.sums: dict[tuple, np.ndarray] = {}  # (key, metric) -> per-draw sum over items
        self.counts: dict[tuple, np.ndarray] = {}
        self.paired: dict[tuple, dict] = {}  # (key, metric, baseline) -> item -> the baseline's value on it

    def add(self, key: tuple, metric: str, item, value, draws=None, versus: dict | None = None) -> None:
        if value is None or not np.isfinite(value):
            return
        self.points.setdefault((key, metric), {})[item] = float(value)
        if draws is not None and self.draws:
            ok = np.isfinite(draws)
            s = self.sums.setdefault((key, metric), np.zeros(self.draws))
            n = self.counts.setdefault((key, metric), np.zeros(self.draws))
            s[ok] += draws[ok]
            n += ok
        for name, v in (versus or {}).items():
            if v is not None and np.isfinite(v):
                self.paired.setdefault((key, metric, name), {})[item] = float(v)

    def value(self, key: tuple, metric: str) -> float | None:
        points = self.points.get((key, metric))
        return float(np.mean(list(points.values()))) if points else None

    def draws_of(self, key: tuple, metric: str) -> np.ndarray | None:
        if (key, metric) not in self.sums:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums[(key, metric)] / self.counts[(key, metric)]

    def baseline_on_items(self, key: tuple, metric: str, baseline: str) -> float | None:
        """The baseline's mean over the items this key's figure averages (None when it has none of them)."""
        paired = self.paired.get((key, metric, baseline)) or {}
        items = [paired[i] for i in self.points.get((key, metric), {}) if i in paired]
        return float(np.mean(items)) if items else None

    def keys(self) -> list[tuple]:
        return sorted({k for k, _ in self.points}, key=lambda k: tuple("" if v is None else str(v) for v in k))

    def metrics(self, key: tuple) -> list[str]:
        return sorted(m for k, m in self.points if k == key)


def tables(tally: Tally, level: float) -> tuple[list[dict], list[dict]]:
    """(styles rows, comparisons rows). Run keys are (model, style, mode, weighting)."""
    styles, comparisons = [], []
    keys = tally.keys()
    for key in keys:
        model, style, mode, weighting = key
        for metric in tally.metrics(key):
            value = tally.value(key, metric)
            lo, hi = interval(tally.draws_of(key, metric), level)
            row = {
                "model": model,
                "style": style,
                "mode": mode,
                "weighting": weighting,
                "metric": metric,
                "value": value,
                "ci_low": lo,
                "ci_high": hi,
                **dict.fromkeys(VS_COLUMNS.values()),
            }
            if not is_baseline(style) and direction(metric) is not None:
                for name, column in VS_COLUMNS.items():
                    cmp = _versus(tally, key, metric, name, level)
                    if cmp is not None:
                        row[column] = cmp["improvement"]
                        comparisons.append(cmp)
                for other in keys:
                    if other[2:] != (mode, weighting) or is_baseline(other[1]):
                        continue
                    versus = None
                    if other[0] == model and other[1] not in (style, BASE):
                        versus = other[1]  # another style of the same model
                    elif other[0] != model and other[1] == style:
                        versus = MODEL + other[0]  # the same style on another model
                    cmp = None if versus is None else _versus(tally, key, metric, versus, level)
                    if cmp is not None:
                        comparisons.append(cmp)
            styles.append(row)
    return styles, comparisons


def _versus(tally: Tally, key: tuple, metric: str, versus: str, level: float) -> dict | None:
    model, style, mode, weighting = key
    value = tally.value(key, metric)
    draws = tally.draws_of(key, metric)
    if is_baseline(versus):
        other = tally.baseline_on_items(key, metric, versus)
        other_draws = None if draws is None or other is None else np.full_like(draws, other)
    else:
        if versus == style:
            return None
        if versus.startswith(MODEL):
            other_key = (versus[len(MODEL) :], style, mode, weighting)
        else:
            other_key = (model, versus, mode, weighting)
        other = tally.value(other_key, metric)
        other_draws = tally.draws_of(other_key, metric)
    if value is None or other is None:
        return None
    gain = improvement(metric, value, other)
    lo, hi = (None, None)
    if draws is not None and other_draws is not None:
        lo, hi = interval(improvement(metric, draws, other_draws), level)
    return {
        "model": model,
        "mode": mode,
        "weighting": weighting,
        "metric": metric,
        "style": style,
        "versus": versus,
        "value": value,
        "versus_value": other,
        "improvement": gain,
        "ci_low": lo,
        "ci_high": hi,
        "beats": bool(gain > 0),
        "significant": bool(lo is not None and (lo > 0 or hi < 0)),
    }
