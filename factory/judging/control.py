"""The trait-control report: how far an adapter moves judged Big Five scores from the base model toward a target.

Per target and model (base, adapter), over that model's answers that were complete and judged:
    per trait: mean and standard deviation (ddof 0) of the judged score; `toward` when the adapter's mean is
    closer to the target than the base's (|adapter - target| < |base - target|, the study's check mark);
    per answer, then averaged: similarity to the target (the pairs' similarity), MAE and Euclidean distance;
    moved_toward_share: the share of the five traits moved toward the target.
Counts say how many answers each mean stands on, and how many were cut at max_tokens or failed the judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from factory.judging import targets as T

MODELS = ("base", "adapter")


def report(answers: Sequence[dict], vectors: dict[str, Sequence[float]], kind: str, alpha: float) -> dict[str, Any]:
    """target -> report, from answer rows (target, model, valid, invalid_reason, scores: list | None)."""
    out: dict[str, Any] = {}
    for name, vec in vectors.items():
        tv = np.asarray(vec, dtype=np.float64)
        rows = [a for a in answers if a["target"] == name]
        per: dict[str, Any] = {}
        means: dict[str, np.ndarray | None] = {}
        for model in MODELS:
            mine = [a for a in rows if a["model"] == model]
            judged = [a["scores"] for a in mine if a["scores"] is not None]
            scores = np.asarray(judged, dtype=np.float64).reshape(-1, 5)
            means[model] = scores.mean(axis=0) if len(scores) else None
            per[model] = {
                "answers": len(mine),
                "judged": len(judged),
                "truncated": sum(1 for a in mine if (a["invalid_reason"] or "").startswith("truncated")),
                "failed": sum(1 for a in mine if a["scores"] is None),
                "similarity": _mean([T.similarity(tv, s, kind, alpha) for s in scores]),
                "mae": _mean([T.mae(tv, s) for s in scores]),
                "euclidean": _mean([T.euclidean(tv, s) for s in scores]),
                "mean": None if means[model] is None else dict(zip(T.TRAITS, map(float, means[model]))),
                "std": None if not len(scores) else dict(zip(T.TRAITS, map(float, scores.std(axis=0)))),
            }
        traits = {}
        for i, t in enumerate(T.TRAITS):
            b, a = means["base"], means["adapter"]
            both = b is not None and a is not None
            traits[t] = {
                "target": float(tv[i]),
                "base": None if b is None else float(b[i]),
                "adapter": None if a is None else float(a[i]),
                "delta": float(a[i] - b[i]) if both else None,
                "toward": bool(abs(a[i] - tv[i]) < abs(b[i] - tv[i])) if both else None,
            }
        moved = [v["toward"] for v in traits.values() if v["toward"] is not None]
        out[name] = {
            "target_vector": [round(float(x), 6) for x in tv],  # stored as float32: show the vector written
            "models": per,
            "traits": traits,
            "moved_toward_share": float(np.mean(moved)) if moved else None,
        }
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def plot(reports: dict[str, Any], path: Path) -> None:
    """Per target, one panel: per trait the base and adapter means (bars, std as error bars) and the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(reports))
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.6), squeeze=False, sharey=True)
    x = np.arange(len(T.TRAITS))
    for ax, (name, r) in zip(axes[0], reports.items()):
        for k, (model, color) in enumerate((("base", "#9e9e9e"), ("adapter", "#1f77b4"))):
            m, s = r["models"][model]["mean"], r["models"][model]["std"]
            if m is None:
                continue
            ax.bar(x + (k - 0.5) * 0.38, [m[t] for t in T.TRAITS], 0.38, yerr=[s[t] for t in T.TRAITS],
                   color=color, label=f"{model} (n={r['models'][model]['judged']})", capsize=2)  # fmt: skip
        ax.scatter(x, r["target_vector"], marker="D", color="#d62728", zorder=3, label="target")
        ax.set_xticks(x, [t[0].upper() for t in T.TRAITS])
        ax.set_ylim(0, 1)
        share = r["moved_toward_share"]
        ax.set_title(f"{name}: {'-' if share is None else round(share * 5)}/5 toward target", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    axes[0][0].set_ylabel("judged score")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
