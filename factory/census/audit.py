"""How census-faithful is any people dataset: the `meta_personas` fidelity report, for people it did not draw.

A dataset's people (one geography at a time, category names as `meta_personas` writes them: a mapped
`dataset` stage, a published persona set, the factory's own people) become census codes; every table the
geography's census fit uses is compared with them as `factory.census.fidelity` compares a fresh sample (TVD
within the table's universe and given its conditioning dimensions, one-way TVD, worst cell), and every attribute
the census fit knows gets a one-way TVD against the census margin (`factory.census.raking.census_margin`).
What cannot be compared is listed with the reason: a table whose dimension the dataset does not have (often
`employment_status`, which sets the universe of the race tables), an attribute left unmapped, persons outside
the census universe (age), persons with a missing value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from factory.census import fidelity, model, vocab
from factory.census.persons import CITIZENSHIP

# census attribute -> the people column that carries it (when the names differ)
COLUMN_OF = {"nativity": "citizenship", "veteran": "veteran_status"}
LANGUAGES = ["English only"] + [f"{lang} | {ability}" for lang in vocab.LANGUAGE[1:] for ability in vocab.ENGLISH[1:]]
ONEWAY_COLUMNS = {
    "geography": "string",
    "attribute": "string",
    "persons": "int64",
    "tvd": "float64",
    "largest_gap": "string",
    "gap": "float64",
}
NOT_COMPARED_COLUMNS = {"geography": "string", "what": "string", "reason": "string"}


@dataclass
class Audit:
    fidelity: list[dict] = field(default_factory=list)  # fidelity.row per comparable census table
    oneway: list[dict] = field(default_factory=list)  # per attribute: one-way TVD against the census margin
    not_compared: list[dict] = field(default_factory=list)  # what could not be compared, and why


def census_attributes(spec: model.GeoSpec) -> dict[str, list[str]]:
    """Every attribute a geography's fit knows -> its categories, in code order."""
    cats = {**vocab.CORE_DIMS, "nativity": CITIZENSHIP}
    return cats | {b.name: list(b.categories) for b in spec.blocks}


def codes_of(spec: model.GeoSpec, people: dict[str, list]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Census codes (-1 where missing) of the attributes the people carry, and why the others are absent."""
    codes: dict[str, np.ndarray] = {}
    absent: dict[str, str] = {}
    if "age" in people:
        age = np.array([-1 if a is None else int(a) for a in people["age"]], dtype=np.int64)
        codes["age"] = age
        lookup = np.full(vocab.MAX_AGE + 1, -1, dtype=np.int64)
        for i, (lo, hi) in enumerate(vocab.AGE_BANDS):
            lookup[lo : hi + 1] = i
        codes["age_band"] = np.where(age >= 0, lookup[np.clip(age, 0, vocab.MAX_AGE)], -1)
        for name, groups in spec.derived_ages.items():
            codes[name] = np.where(age >= 0, model.derived_age_codes(np.clip(age, 0, vocab.MAX_AGE), groups), -1)
    for attribute, categories in census_attributes(spec).items():
        if attribute in codes:
            continue
        if attribute == "language":
            if "language" in people and "english_ability" in people:
                pairs = zip(people["language"], people["english_ability"])
                names = [None if a is None or b is None else _language(a, b) for a, b in pairs]
                codes["language"] = _index(names, LANGUAGES)
            else:
                absent["language"] = "needs both language and english_ability (the census crosses them)"
            continue
        column = COLUMN_OF.get(attribute, attribute)
        if column in people:
            codes[attribute] = _index(people[column], categories)
        else:
            absent[attribute] = f"no '{column}' column"
    if "age" not in people:
        absent |= {name: "no 'age' column (single years)" for name in spec.derived_ages}
    if "age_band" not in codes:
        absent["age_band"] = "no 'age' or 'age_band' column"
    return codes, absent


def _language(language: str, ability: str) -> str:
    return "English only" if language == "English only" else f"{language} | {ability}"


def _index(names: list, categories: list[str]) -> np.ndarray:
    where = {c: i for i, c in enumerate(categories)}
    return np.array([where.get(v, -1) if v is not None else -1 for v in names], dtype=np.int64)


def audit(spec: model.GeoSpec, fitted: model.FittedGeo, people: dict[str, list]) -> Audit:
    """The report for one geography's people (column -> category names, `age` in years)."""
    from factory.census.raking import census_margin

    out = Audit()
    codes, absent = codes_of(spec, people)
    for what, reason in absent.items():
        out.not_compared.append({"geography": spec.geo, "what": what, "reason": reason})
    for kind, margin in fidelity.margins(spec):
        lacking = [d for d in margin.dims if d not in codes]
        if lacking:
            reason = f"needs {', '.join(COLUMN_OF.get(d, d) for d in lacking)}, which the dataset does not have"
            out.not_compared.append({"geography": spec.geo, "what": margin.name, "reason": reason})
            continue
        known = np.logical_and.reduce([codes[d] >= 0 for d in margin.dims])
        sub = {d: codes[d][known] for d in margin.dims}
        out.fidelity.append(fidelity.row(spec, kind, margin, sub, fitted.fit_errors))
    universe = codes["age_band"] >= 0 if "age_band" in codes else None
    for column, categories in column_categories(spec).items():
        if column not in people and not (column == "age_band" and "age_band" in codes):
            continue
        values = codes["age_band"] if column == "age_band" else _index(people[column], categories)
        keep = (values >= 0) & (universe if universe is not None else True)
        target = census_margin(fitted, column)
        out.oneway.append(oneway_row(spec.geo, column, values[keep], target, categories))
    return out


def column_categories(spec: model.GeoSpec) -> dict[str, list[str]]:
    """People columns with a census margin (`raking.RAKEABLE`) -> their categories, as meta_personas writes them."""
    from factory.census.persons import NATIVITY
    from factory.census.raking import RAKEABLE

    attributes = census_attributes(spec)
    named = {COLUMN_OF.get(a, a): cats for a, cats in attributes.items() if a != "language"}
    named |= {"race": vocab.RACE, "nativity": NATIVITY, "language": vocab.LANGUAGE, "english_ability": vocab.ENGLISH}
    return {c: named[c] for c in RAKEABLE if c in named}


def oneway_row(geo: str, column: str, values: np.ndarray, target: np.ndarray, names: list[str]) -> dict:
    share = np.bincount(values, minlength=len(target)) / max(len(values), 1)
    census = target / target.sum()
    gaps = share - census
    worst = int(np.argmax(np.abs(gaps)))
    return {
        "geography": geo,
        "attribute": column,
        "persons": int(len(values)),
        "tvd": float(np.abs(gaps).sum() / 2) if len(values) else float("nan"),
        "largest_gap": names[worst],
        "gap": float(gaps[worst]),
    }
