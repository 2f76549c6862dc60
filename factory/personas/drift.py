"""Drift: how far a written persona strays from the meta persona it was written from (the study's "catch").

For every field a persona restates (age, sex, race, state, education, employment, marital status), the persona's
value is read (from its JSON, or from the text with simple patterns) and compared with the sampled fact; a
contradiction is a stated value that differs. Fields the persona adds on its own (political leaning) are counted
as additions. Text measures per persona: TextBlob polarity and subjectivity, length; distinct-n over a style.
"""

from __future__ import annotations

import re
from typing import Any

from factory.census import vocab
from factory.census.states import states
from factory.personas import styles

EDU_LEVEL = {  # census education -> persona education level
    "Less than 9th grade": 0,
    "9th to 12th grade, no diploma": 0,
    "High school graduate (includes equivalency)": 1,
    "Some college, no degree": 2,
    "Associate's degree": 2,
    "Bachelor's degree": 3,
    "Graduate or professional degree": 4,
}
MARITAL = {
    "Never married": "Never married",
    "Now married, except separated": "Married",
    "Separated": "Separated",
    "Widowed": "Widowed",
    "Divorced": "Divorced",
}
PAPER_RACE = {
    "Black": "Black or African American",
    "Native Hawaiian and Pacific Islander": "Native Hawaiian and Other Pacific Islander",
}
RACE_WORDS = {
    "Hispanic or Latino": r"hispanic|latin[oax]|mexican[- ]american|puerto rican|cuban[- ]american",
    "Black or African American": r"african[- ]american|\bblack\b",
    "Asian": r"\basian\b|chinese|korean|vietnamese|filipin[oa]|japanese|indian[- ]american",
    "American Indian and Alaska Native": r"native american|american indian|alaska native|\btribe\b",
    "White": r"\bwhite\b|caucasian",
}
POLITICS = re.compile(
    r"\b(democrat|republican|liberal|conservative|progressive|libertarian|left-leaning|"
    r"right-leaning|vot(?:e|es|ed|ing) for)\b",
    re.I,
)
AGE_TEXT = re.compile(r"\b(\d{2})[- ]year[- ]old\b|\b(\d{2}) years old\b|\baged? (\d{2})\b|\bis (\d{2}),", re.I)
FIELDS = ("age", "sex", "race", "state", "education", "employment", "marital_status")


def _state_names() -> dict[str, str]:
    return {s["state_name"].lower(): s["state_name"] for s in states()}


def expected(meta: dict[str, Any], names: dict[str, list[str]]) -> dict[str, Any]:
    """The meta persona's facts in the persona's vocabulary (age as the band of years it allows)."""

    def label(col: str) -> Any:
        return names[col][meta[col]] if col in names else meta[col]

    if "STATE" in meta:  # paper mode
        band = label("AGE")
        lo, _, hi = band.replace("+", "-99").partition("-")
        by_code = {s["state_po"]: s["state_name"] for s in states()}
        race = label("RACE")
        return {
            "age": (int(lo), int(hi)),
            "sex": label("SEX"),
            "race": PAPER_RACE.get(race, race),
            "state": by_code.get(meta["STATE"], meta["STATE"]),
        }
    lo, hi = vocab.AGE_BANDS[meta["age_band"]]
    return {
        "age": (lo, hi),
        "sex": label("sex"),
        "race": label("race_ethnicity"),
        "state": meta["geography_name"],
        "education": styles.EDUCATION[EDU_LEVEL[label("education")]],
        "employment": label("employment_status"),
        "marital_status": MARITAL[label("marital_status")],
    }


def stated(style: str, text: str, parsed: Any) -> dict[str, Any]:
    """The facts a persona states, from its JSON fields or its text."""
    out: dict[str, Any] = {}
    if isinstance(parsed, dict):
        get = {k.lower(): v for k, v in parsed.items()}
        for field, keys in (
            ("age", ("age",)),
            ("sex", ("sex",)),
            ("race", ("race",)),
            ("state", ("state", "place_of_residence")),
            ("education", ("education",)),
            ("employment", ("employment_status",)),
            ("marital_status", ("marital_status",)),
        ):
            for k in keys:
                if k in get and get[k] not in (None, ""):
                    out[field] = get[k]
                    break
        if isinstance(out.get("state"), str):
            out["state"] = _find_state(out["state"]) or out["state"]
        return out
    m = AGE_TEXT.search(text)
    if m:
        out["age"] = int(next(g for g in m.groups() if g))
    he = len(re.findall(r"\b(he|him|his|himself)\b", text, re.I))
    she = len(re.findall(r"\b(she|her|hers|herself)\b", text, re.I))
    if he != she and max(he, she) >= 2:
        out["sex"] = "Male" if he > she else "Female"
    state = _find_state(text)
    if state:
        out["state"] = state
    for race, pattern in RACE_WORDS.items():
        if re.search(pattern, text, re.I):
            out["race"] = race
            break
    return out


def _find_state(text: str) -> str | None:
    lowered = text.lower()
    names = _state_names()
    hits = [(lowered.find(n), names[n]) for n in names if re.search(rf"\b{re.escape(n)}\b", lowered)]
    if not hits:
        code = re.search(r"\b([A-Z]{2})\b", text)
        by_code = {s["state_po"]: s["state_name"] for s in states()}
        return by_code.get(code.group(1)) if code else None
    return min(hits)[1]


def compare(expect: dict[str, Any], state: dict[str, Any]) -> dict[str, bool | None]:
    """Per field: True contradicted, False agrees, None not stated."""
    out: dict[str, bool | None] = {}
    for field in FIELDS:
        if field not in expect:
            continue
        if field not in state:
            out[field] = None
        elif field == "age":
            lo, hi = expect["age"]
            try:
                out[field] = not (lo <= int(state["age"]) <= hi)
            except (TypeError, ValueError):
                out[field] = True
        else:
            out[field] = str(state[field]).strip().lower() != str(expect[field]).strip().lower()
    return out


def text_of(text: str, parsed: Any) -> str:
    if isinstance(parsed, dict):
        parts: list[str] = []

        def walk(v: Any) -> None:
            if isinstance(v, dict):
                for x in v.values():
                    walk(x)
            elif isinstance(v, str):
                parts.append(v)

        walk(parsed)
        return ". ".join(parts)
    return text


def text_measures(text: str) -> dict[str, float]:
    from textblob import TextBlob

    blob = TextBlob(text)
    return {
        "polarity": float(blob.sentiment.polarity),
        "subjectivity": float(blob.sentiment.subjectivity),
        "chars": float(len(text)),
        "words": float(len(text.split())),
        "mentions_politics": float(bool(POLITICS.search(text))),
    }


def distinct_n(texts: list[str], n: int) -> float:
    grams, total = set(), 0
    for t in texts:
        words = t.lower().split()
        for i in range(len(words) - n + 1):
            grams.add(tuple(words[i : i + n]))
            total += 1
    return len(grams) / total if total else 0.0
