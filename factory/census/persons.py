"""Sampled codes -> the `meta_personas` datasets, Big Five traits, rule checks and the fidelity summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factory.census import bigfive, vocab
from factory.census.model import GeoSpec

PAPER_AGE = [(18, 19), (20, 24), (25, 29), (30, 34), (35, 44), (45, 54), (55, 64), (65, 74), (75, 84), (85, 99)]
PAPER_AGE_NAMES = ["18-19", "20-24", "25-29", "30-34", "35-44", "45-54", "55-64", "65-74", "75-84", "85+"]
PAPER_RACE = [
    "Hispanic or Latino",
    "White",
    "Black",
    "American Indian and Alaska Native",
    "Asian",
    "Native Hawaiian and Pacific Islander",
    "Some other race",
    "Two or more races",
]
LANGUAGE_OF = np.array([0] + [1 + i // 2 for i in range(8)])  # combined language x ability -> language
ENGLISH_OF = np.array([0] + [1, 2] * 4)
NATIVITY = ["Native", "Foreign born"]
CITIZENSHIP = ["U.S. citizen by birth", "Naturalized U.S. citizen", "Not a U.S. citizen"]

# The columns of the datasets below, as the stages declare them (factory.stage.Columns types; 'label' is a
# ClassLabel whose names are the census categories). calibrate reads and re-draws every full-mode column.
FULL_COLUMNS = {
    "person_id": "string",
    "geography": "label",
    "geography_id": "string",
    "geography_name": "string",
    "weight": "float64",
    "age": "int16",
    **dict.fromkeys(["age_band", "sex", "race_ethnicity"], "label"),
    "hispanic": "bool",
    **dict.fromkeys(
        ["race", "education", "school_enrollment", "marital_status", "relationship", "household_type",
         "employment_status", "occupation", "industry", "class_of_worker", "household_income", "health_insurance",
         "veteran_status", "language", "english_ability", "nativity", "citizenship"],
        "label",
    ),
}  # fmt: skip
PAPER_COLUMNS = {"person_id": "string", "STATE": "string", "AGE": "label", "SEX": "label", "RACE": "label",
                 "weight": "float64"}  # fmt: skip
FIDELITY_COLUMNS = {  # factory.census.fidelity.report's rows
    "geography": "string",
    "attribute": "string",
    "margin": "string",
    "table": "string",
    "dims": "list<string>",
    "given": "list<string>",
    "cells": "int64",
    "persons": "int64",
    "tvd": "float64",
    "max_abs_error": "float64",
    "tvd_oneway": "float64",
    "fit_tvd": "float64",
}


def person_columns(traits: bool) -> dict[str, str]:
    """The full-mode columns, with the Big Five traits (float32, 0-1) after them when they are drawn."""
    return {**FULL_COLUMNS, **(dict.fromkeys(bigfive.TRAITS, "float32") if traits else {})}


def big_five(codes: dict[str, np.ndarray], options, rng: np.random.Generator) -> np.ndarray | None:
    n = len(codes["sex"])
    if options.mode == "none":
        return None
    if options.mode == "targets":
        _, vectors = options.vectors()
        return bigfive.from_targets(vectors, options.spread, n, rng)
    return bigfive.sample(codes["age"], codes["sex"] == 0, codes["nativity"] == 0, rng)


def _class_label(names: list[str]):
    from datasets import ClassLabel

    return ClassLabel(names=list(names))


def full_dataset(spec: GeoSpec, codes: dict[str, np.ndarray], traits: np.ndarray | None, n: int, all_geos: list[str]):
    from datasets import Features, Value

    blocks = {b.name: b.categories for b in spec.blocks}
    cols: dict = {
        "person_id": person_ids(spec.geo, n),
        "geography": np.full(n, all_geos.index(spec.geo), dtype=np.int64),
        "geography_id": _repeat(spec.geo_id, n),
        "geography_name": _repeat(spec.name, n),
        "weight": np.full(n, spec.population / n),
        "age": codes["age"].astype(np.int16),
        "age_band": codes["age_band"],
        "sex": codes["sex"],
        "race_ethnicity": codes["race_ethnicity"],
        "hispanic": codes["race_ethnicity"] == 0,
        "race": codes["race"],
        "education": codes["education"],
        "school_enrollment": codes["school_enrollment"],
        "marital_status": codes["marital_status"],
        "relationship": codes["relationship"],
        "household_type": codes["household_type"],
        "employment_status": codes["employment_status"],
        "occupation": codes["occupation"],
        "industry": codes["industry"],
        "class_of_worker": codes["class_of_worker"],
        "household_income": codes["household_income"],
        "health_insurance": codes["health_insurance"],
        "veteran_status": codes["veteran"],
        "language": LANGUAGE_OF[codes["language"]],
        "english_ability": ENGLISH_OF[codes["language"]],
        "nativity": (codes["nativity"] > 0).astype(np.int64),
        "citizenship": codes["nativity"],
    }
    features = {
        "person_id": Value("string"),
        "geography": _class_label(all_geos),
        "geography_id": Value("string"),
        "geography_name": Value("string"),
        "weight": Value("float64"),
        "age": Value("int16"),
        "age_band": _class_label(vocab.AGE),
        "sex": _class_label(vocab.SEX),
        "race_ethnicity": _class_label(vocab.RACE_ETHNICITY),
        "hispanic": Value("bool"),
        "race": _class_label(vocab.RACE),
        "education": _class_label(vocab.EDUCATION),
        "school_enrollment": _class_label(blocks["school_enrollment"]),
        "marital_status": _class_label(vocab.MARITAL),
        "relationship": _class_label(blocks["relationship"]),
        "household_type": _class_label(blocks["household_type"]),
        "employment_status": _class_label(vocab.EMPLOYMENT),
        "occupation": _class_label(blocks["occupation"]),
        "industry": _class_label(blocks["industry"]),
        "class_of_worker": _class_label(blocks["class_of_worker"]),
        "household_income": _class_label(blocks["household_income"]),
        "health_insurance": _class_label(blocks["health_insurance"]),
        "veteran_status": _class_label(blocks["veteran"]),
        "language": _class_label(vocab.LANGUAGE),
        "english_ability": _class_label(vocab.ENGLISH),
        "nativity": _class_label(NATIVITY),
        "citizenship": _class_label(CITIZENSHIP),
    }
    if traits is not None:
        for i, t in enumerate(bigfive.TRAITS):
            cols[t] = traits[:, i].astype(np.float32)
            features[t] = Value("float32")
    return _dataset(cols, Features(features))


def _dataset(cols: dict, features):
    """Arrow table built column by column (no per-value Python), with the HF features attached."""
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo

    arrays = {}
    for name, value in cols.items():
        typ = features[name].pa_type if hasattr(features[name], "pa_type") else None
        if isinstance(value, pa.Array):
            arrays[name] = value
        else:
            arrays[name] = pa.array(np.asarray(value), type=typ)
    table = pa.table(arrays).cast(features.arrow_schema)
    # an explicit fingerprint: without one, datasets hashes the whole table (seconds per million rows)
    fingerprint = f"persons-{len(table)}-{'-'.join(table.column_names)}"
    return Dataset(table, info=DatasetInfo(features=features), fingerprint=fingerprint[:64])


def person_ids(geo: str, n: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), width=7, padding="0")
    return pc.binary_join_element_wise(pa.scalar(f"{geo}-"), digits, "")


def _repeat(value: str, n: int):
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([value])).cast(pa.string())


def paper_dataset(spec: GeoSpec, codes: dict[str, np.ndarray], n: int, all_geos: list[str]):
    """The study's meta persona: AGE band, SEX, RACE (Hispanic counted once) and STATE, with its strings."""
    from datasets import Features, Value

    lookup = np.zeros(vocab.MAX_AGE + 1, dtype=np.int64)
    for i, (lo, hi) in enumerate(PAPER_AGE):
        lookup[lo : hi + 1] = i
    cols = {
        "person_id": person_ids(spec.geo, n),
        "STATE": _repeat(spec.geo, n),
        "AGE": lookup[codes["age"]],
        "SEX": codes["sex"].astype(np.int64),
        "RACE": codes["race_ethnicity"].astype(np.int64),
        "weight": np.full(n, spec.population / n),
    }
    features = Features(
        {
            "person_id": Value("string"),
            "STATE": Value("string"),
            "AGE": _class_label(PAPER_AGE_NAMES),
            "SEX": _class_label(vocab.SEX),
            "RACE": _class_label(PAPER_RACE),
            "weight": Value("float64"),
        }
    )
    return _dataset(cols, features)


def rule_checks(codes: dict[str, np.ndarray]) -> dict[str, float]:
    """Counts of persons breaking rules that the census makes (near-)impossible; all should be zero."""
    age, edu, emp = codes["age"], codes["education"], codes["employment_status"]
    employed = emp == vocab.EMPLOYMENT.index("Employed")
    none = 0  # index of "None" in occupation / industry / class of worker
    married = codes["marital_status"] == vocab.MARITAL.index("Now married, except separated")
    return {
        "graduate_degree_under_22": float(
            ((edu == vocab.EDUCATION.index("Graduate or professional degree")) & (age < 22)).sum()
        ),
        "bachelors_under_21": float(((edu == vocab.EDUCATION.index("Bachelor's degree")) & (age < 21)).sum()),
        "occupation_without_employment": float(((codes["occupation"] != none) & ~employed).sum()),
        "employed_without_occupation": float(((codes["occupation"] == none) & employed).sum()),
        "industry_without_employment": float(((codes["industry"] != none) & ~employed).sum()),
        "spouse_not_married": float(((codes["relationship"] == vocab.RELATIONSHIP.index("Spouse")) & ~married).sum()),
        "armed_forces_65_plus": float(((emp == vocab.EMPLOYMENT.index("Armed Forces")) & (age >= 65)).sum()),
        "veteran_on_active_duty": float(
            ((emp == vocab.EMPLOYMENT.index("Armed Forces")) & (codes["veteran"] == 0)).sum()
        ),
    }


def unconstrained(constraints) -> dict[str, int]:
    """Pairs of core attributes that no table constrains jointly -> in how many geographies."""
    if constraints is None:
        return {}
    df = constraints.to_pandas()
    df = df[df["tables"] == ""]
    return {str(k): int(v) for k, v in df.groupby("attributes", sort=False)["geography"].nunique().items()}


def fidelity_summary(
    fidelity, artifacts: Path, notes: list[str] | None = None, constraints=None, drawn: bool = True
) -> dict:
    """Worst and mean TVD per census table over geographies, the tables above 0.01, the pairs of core attributes
    no table constrains, and a heatmap PNG. `drawn`: the people were drawn here (the card says how)."""
    df = fidelity.to_pandas()
    if df.empty:
        return {}
    df["key"] = df["attribute"] + ": " + df["margin"]
    agg = df.groupby("key", sort=False).agg(
        tvd_max=("tvd", "max"),
        tvd_mean=("tvd", "mean"),
        oneway_max=("tvd_oneway", "max"),
        cell_max=("max_abs_error", "max"),
    )
    summary = {
        "geographies": int(df["geography"].nunique()),
        "tables": int(len(agg)),
        "tvd_max": float(df["tvd"].max()),
        "tvd_mean": float(df["tvd"].mean()),
        "tvd_oneway_max": float(df["tvd_oneway"].max()),
        "max_abs_error": float(df["max_abs_error"].max()),
        "tables_over_0.01": sorted(agg.index[agg["tvd_max"] > 0.01].tolist()),
        "per_table": {k: {c: round(float(v), 5) for c, v in row.items()} for k, row in agg.iterrows()},
        "unconstrained_pairs": unconstrained(constraints),
    }
    _heatmap(df, artifacts / "fidelity.png")
    summary["plots"] = ["artifacts/fidelity.png"]
    (artifacts / "card_section.md").write_text(card_section(agg, summary, notes or [], drawn))
    summary["card_section"] = "artifacts/card_section.md"
    return summary


def card_section(agg, summary: dict, notes: list[str], drawn: bool = True) -> str:
    """Markdown for the dataset card: how people were built (when drawn here) and how close they are to the census."""
    from factory.census import model

    structure = model.__doc__.split("Dependency structure", 1)[1].split("Each conditional", 1)[0]
    built = [
        "## How these people were built",
        "",
        "Dependency structure" + structure.rstrip(),
        "",
        "Each conditional attribute is itself fitted by iterative proportional fitting to every census table that"
        " crosses it with a parent; persons are drawn by systematic sampling from the fitted joint, so each cell's"
        " count is within one of its expectation.",
        "",
    ]
    lines = [
        *(built if drawn else []),
        f"## Fidelity to the census ({summary['geographies']} geographies)",
        "",
        f"Total-variation distance (TVD) between the {'synthetic ' if drawn else ''}people and each census table,"
        " within the table's universe and given its conditioning dimensions; worst and mean over geographies.",
        "",
        "| table | worst TVD | mean TVD | worst one-way TVD | worst cell error |",
        "|---|---|---|---|---|",
    ]
    for key, row in agg.iterrows():
        lines.append(
            f"| {key} | {row['tvd_max']:.4f} | {row['tvd_mean']:.4f} | {row['oneway_max']:.4f} | "
            f"{row['cell_max']:.4f} |"
        )
    lines += ["", "![fidelity](artifacts/fidelity.png)", ""]
    pairs = summary.get("unconstrained_pairs", {})
    if pairs:
        n = summary["geographies"]
        lines += [
            "## Joints that are assumptions",
            "",
            "No census table used here crosses these pairs of core attributes; their joint comes from the fit's"
            " prior and the tables that constrain each of them with other attributes, not from data:",
            "",
            *[
                f"- {p.replace('_', ' ')}" + ("" if k == n else f" (in {k} of {n} geographies)")
                for p, k in pairs.items()
            ],
            "",
        ]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


def _heatmap(df, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pivot = df.pivot_table(index="key", columns="geography", values="tvd", aggfunc="max", sort=False)
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * pivot.shape[1] + 5), 0.28 * pivot.shape[0] + 1.5))
    im = ax.imshow(pivot.to_numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=max(0.01, float(pivot.max().max())))
    ax.set_yticks(range(pivot.shape[0]), pivot.index, fontsize=7)
    ax.set_xticks(range(pivot.shape[1]), pivot.columns, fontsize=6, rotation=90)
    ax.set_title("Total-variation distance, synthetic sample vs census table", fontsize=9)
    fig.colorbar(im, ax=ax, label="TVD")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None, "CreationDate": None})
    plt.close(fig)
