"""Who votes: the voting-eligible population, and turnout rates from a user CSV.

Eligible (the default electorate of election questions): citizens aged 18 or more, from the census joint's
`citizenship` attribute (by birth or naturalised; non-citizens are several percent of US adults in the ACS, more in
California or Texas). Real results are votes of citizens, so letting non-citizens vote moves a state's
simulated share toward whatever the non-citizen part of its population answers. `adults` keeps every adult (the
persona-catch study's electorate) to compare.

Turnout (the `turnout` weighting): the person's weight times the rate of the CSV row that matches them. The CSV
has one column per people attribute it conditions on (any column of the people schema, its values the census
category names, e.g. `age_band,education,rate` with `18 to 24 years,Bachelor's degree,0.52`) and a `rate`
column in [0, 1]; every combination a person holds must have a row. Rates might come from the Census Bureau's
Current Population Survey Voting and Registration Supplement (table 4b: reported voting by age, sex, race and
Hispanic origin, per state) or a validated-voter study; the factory ships none, as turnout is a modelling choice.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from factory.errors import DataError, did_you_mean

NOT_CITIZEN = "Not a U.S. citizen"


def eligible(citizenship: list | None, age: np.ndarray | None, stage: str) -> np.ndarray:
    """Mask of persons in the voting-eligible population (citizens 18+)."""
    if citizenship is None:
        raise DataError(
            f"stages.{stage}.electorate: 'eligible' needs a citizenship column in the people input (paper-mode "
            "people have none: set electorate: adults)"
        )
    mask = np.array([c is not None and c != NOT_CITIZEN for c in citizenship], dtype=bool)
    if age is not None:
        mask &= np.asarray(age) >= 18
    return mask


def turnout_rates(path: Path, people: dict[str, list], categories: dict[str, list[str] | None]) -> np.ndarray:
    """Each person's turnout rate from the CSV (see the module doc). `people` holds each people column's values
    (label strings, numbers as text), `categories` the allowed values of a column (None: any)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if "rate" not in header:
                raise DataError(f"{path}: missing column 'rate' (have: {', '.join(header) or 'none'})")
            keys = [c for c in header if c != "rate"]
            if not keys:
                raise DataError(f"{path}: name at least one people column beside 'rate'")
            for c in keys:
                if c not in people:
                    raise DataError(f"{path}: column '{c}' is not a people column{did_you_mean(c, list(people))}")
            table: dict[tuple, float] = {}
            for line, rec in enumerate(reader, start=2):
                key = []
                for c in keys:
                    value = (rec.get(c) or "").strip()
                    allowed = categories.get(c)
                    if allowed is not None and value not in allowed:
                        raise DataError(
                            f"{path}: row {line}, column {c}: unknown category '{value}'{did_you_mean(value, allowed)}"
                        )
                    key.append(value)
                try:
                    rate = float(rec.get("rate") or "")
                except ValueError:
                    raise DataError(f"{path}: row {line}, column rate: '{rec.get('rate')}' is not a number") from None
                if not 0.0 <= rate <= 1.0:
                    raise DataError(f"{path}: row {line}, column rate: {rate} is not a rate in [0, 1]")
                if tuple(key) in table:
                    raise DataError(f"{path}: row {line}: the combination {', '.join(key)} appears twice")
                table[tuple(key)] = rate
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    n = len(next(iter(people.values()))) if people else 0
    out = np.empty(n)
    for i, key in enumerate(zip(*(people[c] for c in keys))):
        key = tuple("" if v is None else str(v) for v in key)
        if key not in table:
            shown = ", ".join(f"{c}={v}" for c, v in zip(keys, key))
            raise DataError(f"{path}: no rate for people with {shown}")
        out[i] = table[key]
    return out
