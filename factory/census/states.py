"""The 50 states + DC (fips, postal code, name): the list every census source and the drift report read, kept apart
from `sources` (which imports the sources) so that a source may read it without an import cycle."""

from __future__ import annotations

import csv
from functools import lru_cache

from factory.resources import data_path


@lru_cache(maxsize=1)
def states() -> list[dict[str, str]]:
    """The 50 states + DC (fips, postal code, name), read without heavy imports (for `factory validate`)."""
    with open(data_path("census", "states.csv"), newline="") as f:
        return list(csv.DictReader(f))
