"""Persona styles: what each asks the model for, and the JSON schemas that constrain and validate the answer.

Styles follow the studies' intents, with their flaws fixed: enumerated fields get the census categories (the
persona-catch study's "industry" options were occupation groups), income is stated as household income with a
range, Big Five scores have a scale (0-1), tables are parsed and validated, and free text is bounded in length so
truncation is detected rather than silently kept.
"""

from __future__ import annotations

from typing import Any

from factory.census import vocab

EDUCATION = [
    "Less than high school",
    "High school graduate",
    "Some college or associate's degree",
    "Bachelor's degree",
    "Graduate or professional degree",
]
MARITAL = ["Never married", "Married", "Separated", "Widowed", "Divorced"]
RACE = list(vocab.RACE_ETHNICITY)  # exclusive: Hispanic or a non-Hispanic race group
EMPLOYMENT = list(vocab.EMPLOYMENT)
IDEOLOGY = ["Very liberal", "Liberal", "Moderate", "Conservative", "Very conservative"]
PARTY = ["Democrat", "Republican", "Independent", "Other"]
STYLES = ("objective_table", "subjective_table", "descriptive", "reflective")


def _enum(values: list[str]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def _text(max_chars: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_chars}


def objective_schema() -> dict[str, Any]:
    props = {
        "AGE": {"type": "integer", "minimum": 18, "maximum": 99},
        "SEX": _enum(vocab.SEX),
        "RACE": _enum(RACE),
        "STATE": _text(30),
        "EDUCATION": _enum(EDUCATION),
        "EMPLOYMENT_STATUS": _enum(EMPLOYMENT),
        "OCCUPATION": _enum([vocab.NONE, *vocab.OCCUPATION]),
        "INDUSTRY": _enum([vocab.NONE, *vocab.INDUSTRY]),
        "HOUSEHOLD_INCOME": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        "MARITAL_STATUS": _enum(MARITAL),
        "HOUSEHOLD_LANGUAGE": _enum(vocab.LANGUAGE),
        "PLACE_OF_BIRTH": _enum(["United States", "Abroad"]),
        "VETERAN_STATUS": _enum(["Veteran", "Nonveteran"]),
        "HEALTH_INSURANCE": _enum(["Private", "Public", "None"]),
    }
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def subjective_schema() -> dict[str, Any]:
    base = objective_schema()
    props = dict(base["properties"])
    props.update(
        {
            "JOB_DESCRIPTION": _text(80),
            "PERSONALITY": _text(80),
            "LIFESTYLE": _text(80),
            "RELIGION": _text(40),
            "IDEOLOGY": _enum(IDEOLOGY),
            "POLITICAL_PARTY": _enum(PARTY),
        }
    )
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def reflective_schema() -> dict[str, Any]:
    score = {"type": "number", "minimum": 0, "maximum": 1}
    props = {
        "name": _text(40),
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "sex": _enum(vocab.SEX),
        "place_of_residence": _text(40),
        "education": _enum(EDUCATION),
        "job": _text(60),
        "big_five": {
            "type": "object",
            "properties": {
                t: score for t in ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
            },
            "required": ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"],
            "additionalProperties": False,
        },
        "motivations": _text(120),
        "strengths": _text(80),
        "weaknesses": _text(80),
        "daily_routine": _text(120),
        "summary": _text(200),
    }
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


SCHEMAS = {"objective_table": objective_schema, "subjective_table": subjective_schema, "reflective": reflective_schema}


# (fact, column) in the order a prompt tells them; state is the geography's name (its code for mapped people)
_FACTS = [
    ("age", "age"),
    ("sex", "sex"),
    ("race/ethnicity", "race_ethnicity"),
    ("state", "geography_name"),
    ("education", "education"),
    ("employment", "employment_status"),
]
_FACTS_AFTER_WORK = [
    ("marital status", "marital_status"),
    ("household income", "household_income"),
    ("language at home", "language"),
    ("citizenship", "citizenship"),
]


def facts(row: dict[str, Any], names: dict[str, list[str]]) -> dict[str, Any]:
    """A meta persona as readable facts for a prompt (full or paper mode rows), Big Five included where present."""

    def label(col: str) -> Any:
        v = row[col]
        return names[col][v] if col in names and isinstance(v, int) else v

    if "STATE" in row:  # paper mode
        return {"age": label("AGE"), "sex": label("SEX"), "race": label("RACE"), "state": row["STATE"]}
    # people mapped from another dataset (`uses: dataset`) carry only some columns: a fact is told when present
    has = {c for c in row if row[c] is not None}
    if "geography_name" not in has and "geography" in has:
        has.add("geography_name")
        row = {**row, "geography_name": label("geography")}
    out: dict[str, Any] = {k: label(c) for k, c in _FACTS if c in has}
    if "occupation" in has and label("occupation") != vocab.NONE:
        out["occupation"] = label("occupation")
        out["industry"] = label("industry")
    out |= {k: label(c) for k, c in _FACTS_AFTER_WORK if c in has}
    if "veteran_status" in has:
        out["veteran"] = label("veteran_status") == "Veteran"
    if "health_insurance" in has:
        out["health insurance"] = label("health_insurance")
    if "openness" in row:
        out["Big Five (0-1)"] = {
            t: round(float(row[t]), 2)
            for t in ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
        }
    return out
