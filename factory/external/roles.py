"""The schemas a mapped dataset can take: the columns downstream stages read for each role.

A role declares, per column, its type (`factory.stage.Columns` types) and, for categorical columns, the allowed
categories (written as a `ClassLabel` with those names, the encoding `meta_personas` writes, so `answers`,
`evaluate` and `audit` read a mapped dataset exactly as they read the factory's own people). A column the recipe
does not map is left out, except the role's `required` columns and its `defaults` (a constant, or the source
row's position for `person_id`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from factory.census import bigfive, vocab
from factory.census.persons import CITIZENSHIP, NATIVITY
from factory.questions.sets import COLUMNS as QUESTION_COLUMNS
from factory.questions.sets import KINDS


@dataclass(frozen=True)
class Role:
    name: str
    columns: dict[str, str]  # column -> type, in output order
    required: tuple[str, ...]  # must be mapped (or defaulted)
    # column -> value when not mapped, or a function of (the mapped columns, the rows' origins) giving the values
    defaults: dict[str, Any] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)  # categorical column -> allowed values


def _geographies() -> list[str]:
    from factory.census.states import states

    return [s["state_po"] for s in states()]


def _with_none(values: list[str]) -> list[str]:
    return [vocab.NONE, *values]


PEOPLE_CATEGORIES = {
    "age_band": vocab.AGE,
    "sex": vocab.SEX,
    "race_ethnicity": vocab.RACE_ETHNICITY,
    "race": vocab.RACE,
    "education": vocab.EDUCATION,
    "school_enrollment": vocab.ENROLLMENT,
    "marital_status": vocab.MARITAL,
    "relationship": vocab.RELATIONSHIP,
    "household_type": vocab.HOUSEHOLD_TYPE,
    "employment_status": vocab.EMPLOYMENT,
    "occupation": _with_none(vocab.OCCUPATION),
    "industry": _with_none(vocab.INDUSTRY),
    "class_of_worker": _with_none(vocab.CLASS_OF_WORKER),
    "household_income": [*vocab.HOUSEHOLD_INCOME, vocab.NONE],  # None: group quarters
    "health_insurance": vocab.HEALTH_INSURANCE,
    "veteran_status": vocab.VETERAN,
    "language": vocab.LANGUAGE,
    "english_ability": vocab.ENGLISH,
    "nativity": NATIVITY,
    "citizenship": CITIZENSHIP,
}


def _row_ids(columns: dict[str, Any], rows: Any) -> list[str]:
    """'<split>-<row>': an id for sources that have none."""
    return rows.ids()


def people() -> Role:
    """The `meta_personas` columns (its categories; `geography` a state postal code)."""
    columns = {"person_id": "string", "geography": "label", "weight": "float64", "age": "int16"}
    columns |= dict.fromkeys(PEOPLE_CATEGORIES, "label") | dict.fromkeys(bigfive.TRAITS, "float32")
    return Role(
        "people",
        columns,
        required=("person_id", "weight"),
        defaults={"person_id": _row_ids, "weight": 1.0},
        categories={"geography": _geographies(), **PEOPLE_CATEGORIES},
    )


def personas() -> Role:
    """What `answers` reads of a persona: whose, in which style (the source's name), the text."""
    return Role(
        "personas", {"person_id": "string", "style": "string", "persona": "string"}, ("person_id", "style", "persona")
    )


def _kind(columns: dict[str, Any], rows: Any) -> list[str]:
    """'choice' for a question with options, 'open' for one without."""
    return ["choice" if opts else "open" for opts in columns["options"].to_pylist()]


def questions() -> Role:
    """The `questions` stage's table (`factory.questions.sets.features`); `kind` is 'choice' with options."""
    columns = {k: v for k, v in QUESTION_COLUMNS.items() if k != "human_groups"}
    return Role(
        "questions",
        columns,
        required=("question_id", "source", "text", "kind", "options"),
        defaults={"question_id": _row_ids, "source": "dataset", "kind": _kind},
        categories={"kind": list(KINDS)},
    )


def answers() -> Role:
    """What `evaluate` reads of simulated answers (the `answers` stage's columns of that name)."""
    columns = {
        "person_id": "string",
        "geography": "string",
        "style": "string",
        "question_id": "string",
        "mode": "string",
        "round": "int32",
        "choice": "int32",
        "distribution": "list<float32>",
        "valid": "bool",
    }
    return Role(
        "answers",
        columns,
        required=tuple(columns),
        defaults={"mode": "fast", "round": 0, "distribution": None},
    )


ROLES = {"people": people, "personas": personas, "questions": questions, "answers": answers}


def role(name: str) -> Role:
    return ROLES[name]()
