"""Drift summary per style (contradiction shares per field, text measures, distinct-n) and its plot."""

from __future__ import annotations

from pathlib import Path

from factory.personas.drift import distinct_n


def drift_summary(personas, drift, artifacts: Path) -> dict:
    df = drift.to_pandas()
    texts = personas.to_pandas()
    summary: dict = {"styles": {}}
    for style, part in df.groupby("style", sort=False):
        stated = part[part["contradicted"].notna()]
        fields = {}
        for field, rows in stated.groupby("field", sort=False):
            fields[field] = {"contradicted": round(float(rows["contradicted"].mean()), 4), "n": int(len(rows))}
        t = texts[texts["style"] == style]
        summary["styles"][style] = {
            "personas": int(len(t)),
            "fields": fields,
            "polarity_mean": round(float(t["polarity"].mean()), 4) if len(t) else None,
            "subjectivity_mean": round(float(t["subjectivity"].mean()), 4) if len(t) else None,
            "chars_mean": round(float(t["persona"].str.len().mean()), 1) if len(t) else None,
            "distinct_1": round(distinct_n(t["persona"].tolist(), 1), 4),
            "distinct_2": round(distinct_n(t["persona"].tolist(), 2), 4),
        }
    if summary["styles"]:
        _plot(summary["styles"], artifacts / "drift.png")
        summary["plots"] = ["artifacts/drift.png"]
    return summary


def _plot(styles: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fields = sorted({f for s in styles.values() for f in s["fields"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(fields) + 2), 3.6))
    width = 0.8 / max(len(styles), 1)
    for k, (style, s) in enumerate(styles.items()):
        values = [s["fields"].get(f, {}).get("contradicted", np.nan) for f in fields]
        ax.bar(np.arange(len(fields)) + k * width, values, width, label=style)
    ax.set_xticks(np.arange(len(fields)) + 0.4 - width / 2, fields, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("share contradicting the meta persona\n(politics: share mentioning it)", fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("Persona drift by style", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
