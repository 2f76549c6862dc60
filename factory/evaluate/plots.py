"""Evaluation plots (matplotlib, Agg backend): a tile-grid US map of election errors and a style comparison chart
with intervals and baselines."""

from __future__ import annotations

from pathlib import Path

# A common 8 x 12 tile-grid layout of US maps: (row, column) of each state's square, Alaska and Hawaii in the
# left corners, DC beside Maryland. Rows top to bottom.
TILE_GRID = {
    "AK": (0, 0), "ME": (0, 11),
    "VT": (1, 10), "NH": (1, 11),
    "WA": (2, 1), "ID": (2, 2), "MT": (2, 3), "ND": (2, 4), "MN": (2, 5), "IL": (2, 6), "WI": (2, 7),
    "MI": (2, 8), "NY": (2, 9), "RI": (2, 10), "MA": (2, 11),
    "OR": (3, 1), "NV": (3, 2), "WY": (3, 3), "SD": (3, 4), "IA": (3, 5), "IN": (3, 6), "OH": (3, 7),
    "PA": (3, 8), "NJ": (3, 9), "CT": (3, 10),
    "CA": (4, 1), "UT": (4, 2), "CO": (4, 3), "NE": (4, 4), "MO": (4, 5), "KY": (4, 6), "WV": (4, 7),
    "VA": (4, 8), "MD": (4, 9), "DE": (4, 10),
    "AZ": (5, 2), "NM": (5, 3), "KS": (5, 4), "AR": (5, 5), "TN": (5, 6), "NC": (5, 7), "SC": (5, 8),
    "DC": (5, 9),
    "OK": (6, 4), "LA": (6, 5), "MS": (6, 6), "AL": (6, 7), "GA": (6, 8),
    "HI": (7, 0), "TX": (7, 4), "FL": (7, 9),
}  # fmt: skip
ROWS, COLS = 8, 12


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def election_map(
    panels: dict[int, dict[str, float]],
    path: Path,
    title: str,
    intervals: dict[int, dict[str, tuple[float, float]]] | None = None,
) -> None:
    """One tile-grid panel per year; `panels[year][state]` = simulated minus real D-R margin in points.

    Blue: the simulation leans more Democratic than the real result; red: more Republican; grey: not simulated.
    The colour scale is symmetric around 0 and shared by all panels so years compare at a glance. With
    `intervals[year][state]` = (low, high) of that margin difference, each tile reads "+12±4" (half the interval's
    width) and a hatched tile's interval covers 0: its error cannot be told from noise.
    """
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    values = [abs(v) for p in panels.values() for v in p.values()]
    limit = max(values, default=1.0) or 1.0
    norm, cmap = Normalize(-limit, limit), plt.get_cmap("RdBu")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 0.8, 3.6), squeeze=False)
    intervals = intervals or {}
    for ax, (year, margins) in zip(axes[0], sorted(panels.items())):
        spans = intervals.get(year, {})
        for state, (row, col) in TILE_GRID.items():
            simulated = state in margins
            face = cmap(norm(margins[state])) if simulated else (0.82, 0.82, 0.82, 1.0)
            label, noise = tile_label(margins[state], spans.get(state)) if simulated else ("", False)
            hatch = "////" if noise else None
            ax.add_patch(Rectangle((col, ROWS - 1 - row), 0.94, 0.94, facecolor=face, edgecolor="white", hatch=hatch))
            dark = simulated and abs(margins[state]) > 0.6 * limit
            ax.text(
                col + 0.47,
                ROWS - 1 - row + 0.58,
                state,
                ha="center",
                va="center",
                fontsize=6.5,
                color="white" if dark else "black",
            )
            if simulated:
                ax.text(
                    col + 0.47,
                    ROWS - 1 - row + 0.26,
                    label,
                    ha="center",
                    va="center",
                    fontsize=5 if state not in spans else 4.2,
                    color="white" if dark else "black",
                )
        ax.set_xlim(-0.1, COLS)
        ax.set_ylim(-0.1, ROWS)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(str(year), fontsize=9)
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(mappable, ax=list(axes[0]), fraction=0.025, pad=0.02)
    bar.set_label("simulated - real margin (D - R, points)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    if intervals:
        title += "\n±: half the interval's width; hatched: the interval covers the real result"
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def tile_label(margin: float, span: tuple[float, float] | None) -> tuple[str, bool]:
    """A state's tile text ("+12", or "+12±4" with half the interval's width) and whether its interval covers 0
    (the error cannot be told from noise: the tile is hatched)."""
    if span is None:
        return f"{margin:+.0f}", False
    return f"{margin:+.0f}±{(span[1] - span[0]) / 2:.0f}", span[0] <= 0 <= span[1]


def styles_chart(
    values: dict[str, dict[str, float]],
    path: Path,
    title: str,
    intervals: dict[str, dict[str, tuple]] | None = None,
    baselines: dict[str, dict[str, float]] | None = None,
) -> None:
    """Grouped bars: `values[series][metric]`, one group per metric, one bar per persona style (series), with
    `intervals[series][metric]` = (low, high) as error bars and `baselines[name][metric]` as a dashed line across
    the metric's group (one line style per baseline)."""
    import numpy as np

    plt = _pyplot()
    intervals, baselines = intervals or {}, baselines or {}
    metrics = sorted({m for v in values.values() for m in v})
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(metrics) + 2.5), 3.8))
    width = 0.8 / max(len(values), 1)
    x = np.arange(len(metrics))
    for k, (series, v) in enumerate(values.items()):
        heights = np.array([v.get(m, np.nan) for m in metrics], dtype=float)
        spans = [intervals.get(series, {}).get(m, (None, None)) for m in metrics]
        low = np.array([h - lo if lo is not None and lo == lo else 0.0 for h, (lo, _) in zip(heights, spans)])
        high = np.array([hi - h if hi is not None and hi == hi else 0.0 for h, (_, hi) in zip(heights, spans)])
        yerr = np.clip(np.nan_to_num(np.vstack([low, high])), 0, None)
        ax.bar(x + k * width, heights, width, label=series, yerr=yerr, capsize=2, error_kw={"linewidth": 0.7})
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (1, 1))]
    for j, (name, v) in enumerate(sorted(baselines.items())):
        label = name  # one legend entry per baseline
        for i, m in enumerate(metrics):
            if m in v and v[m] == v[m]:
                left = i - width / 2
                ax.hlines(v[m], left, left + 0.8, colors="black", linestyles=styles[j % len(styles)], label=label)
                label = None
    ax.set_xticks(x + 0.4 - width / 2, metrics, rotation=30, ha="right", fontsize=7)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("value (shares; alignment 1 = human-like)", fontsize=8)
    ax.legend(fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
