"""Census sources behind one interface: list geographies, give a geography's `GeoSpec`.

- `acs2018` (default): ACS 2018 1-year, 50 states + DC, 16 tables (see `acs2018.py`).
- `acs2023`: ACS 2023 1-year subset, 50 states, DP02/DP03/DP05/S2301/S2401; what it lacks is carried by the same
  state's ACS 2018 fit as the seed (the 2018 structure raked to 2023 margins).
- `tidy`: a user file of one- and two-way tables (`factory/census/tidy.py`), raked onto a base ACS 2018 state.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import Field, model_validator

from factory.census.bigfive import BigFiveOptions
from factory.census.states import states
from factory.options import DataDir, DataFile, OptionBlock

SOURCES = {
    "acs2018": "ACS 2018 1-year state tables (50 states + DC, 16 tables)",
    "acs2023": "ACS 2023 1-year subset (50 states, 5 tables), seeded by each state's ACS 2018 structure",
    "tidy": "your own one- and two-way marginals in the tidy format (a city, a county, another country)",
}


# Pairs of core attributes that no shipped ACS 2018 table crosses (`model.unconstrained_pairs`; tested against the
# fit): their joint is an assumption of the fit. acs2023 and tidy fits are seeded by ACS 2018 and inherit them;
# a census folder with B01001A-I (`factory census fetch`) constrains age x race/ethnicity and sex x race/ethnicity.
ASSUMED_PAIRS = [
    ("age_band", "race_ethnicity"),
    ("sex", "nativity"),
    ("race_ethnicity", "nativity"),
    ("education", "marital_status"),
    ("marital_status", "employment_status"),
]
ASSUMED_WITHOUT_S0501 = [  # and in the 8 states whose S0501 nativity crosses are not published
    ("age_band", "nativity"),
    ("education", "nativity"),
    ("marital_status", "nativity"),
    ("employment_status", "nativity"),
]


def state_codes(source: str) -> list[str]:
    codes = [s["state_po"] for s in states()]
    return [c for c in codes if c != "DC"] if source == "acs2023" else codes


class ACSFolder:
    """ACS tables in the ACS 2018 layout read from a folder (a vintage added with `factory census fetch`)."""

    def __init__(self, root: str):
        self.root = str(root)

    def geographies(self):
        from factory.census import acs2018

        return acs2018.geographies(self.root)

    def population(self, geo: str, min_age: int = 18, max_age: int = 99) -> float:
        from factory.census import acs2018

        return acs2018.population(geo, min_age, max_age, self.root)

    def geo_spec(self, geo: str, min_age: int = 18, max_age: int = 99):
        from factory.census import acs2018

        return acs2018.geo_spec(geo, min_age, max_age, self.root)


class SourceOptions(Protocol):
    """What picks a census source: the meta_personas options, or calibrate's `census:` block (same names)."""

    source: str
    census_dir: Any  # a DataDir (`.resolved`) or None; acs2018 only
    marginals: Any  # a DataFile (`.resolved`) or None; tidy only
    base_geography: str | None  # tidy only


def load_source(options: SourceOptions):
    """The census source that `options` name: acs2018 (or an ACS folder in its layout), acs2023, or a tidy file."""
    if options.source == "acs2018" and options.census_dir is not None:
        return ACSFolder(str(options.census_dir.resolved))
    if options.source == "acs2018":
        from factory.census import acs2018

        return acs2018
    if options.source == "acs2023":
        from factory.census import acs2023

        return acs2023
    from factory.census import tidy

    return tidy.TidySource(options.marginals.resolved, options.base_geography)


class CensusOptions(OptionBlock):
    """Which census joint: calibrate's people were drawn from it (the values of the upstream meta_personas stage);
    audit compares any people with it."""

    source: Literal["acs2018", "acs2023", "tidy"] = Field("acs2018", description="census source (as meta_personas)")
    census_dir: DataDir | None = Field(None, description="acs2018 source: tables from this folder (as meta_personas)")
    marginals: DataFile | None = Field(None, description="tidy source: the marginals file (as meta_personas)")
    base_geography: str | None = Field(None, description="tidy source: ACS 2018 state seeding the fit")
    min_age: int = Field(18, ge=18, le=99, description="youngest age in the universe (as meta_personas)")
    max_age: int = Field(99, ge=18, le=99, description="oldest age in the universe (as meta_personas)")
    ipf_tolerance: float = Field(1e-6, gt=0, le=0.01, description="IPF tolerance of the fit (as meta_personas)")
    bigfive: BigFiveOptions = Field(
        default_factory=BigFiveOptions, description="census mode: re-drawn persons get fresh traits; else kept"
    )

    @model_validator(mode="after")
    def _consistent(self) -> CensusOptions:
        if self.min_age > self.max_age:
            raise ValueError(f"min_age {self.min_age} is above max_age {self.max_age}")
        if self.source == "tidy" and (self.marginals is None or self.base_geography is None):
            raise ValueError("source 'tidy' needs marginals (the file) and base_geography (an ACS 2018 state)")
        if self.source != "tidy" and self.marginals is not None:
            raise ValueError(f"marginals is only read by source 'tidy', not '{self.source}'")
        if self.census_dir is not None and self.source != "acs2018":
            raise ValueError(f"census_dir is only read by source 'acs2018', not '{self.source}'")
        return self
