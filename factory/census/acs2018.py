"""ACS 2018 1-year state tables (51 geographies, 16 tables) -> the margins of one geography.

Every table is read through the generic API-format parser (`acs2018_tables`); suppressed cells (Census code
-999999999) drop the margin that needs them and the manifest says so. The core margins are in `acs2018_core`, the
conditional attributes with their priors in `acs2018_blocks`; this module puts a geography together.
"""

from __future__ import annotations

from factory.census import vocab
from factory.census.acs2018_blocks import blocks
from factory.census.acs2018_core import (  # noqa: F401 (re-exported: acs2023, tests and bench read them here)
    EDU3,
    EDU4,
    EDU5,
    _emp_from_rates,
    age_map,
    core_margins,
    core_margins_age,
    core_seed,
    hispanic_race,
    ident,
)
from factory.census.acs2018_race import core_race_margins
from factory.census.acs2018_tables import (  # noqa: F401
    DETAILED,
    IND_ROWS,
    LABEL_CONTRACT,
    NAME,
    OCC_ROWS,
    S1201_MARITAL_COLS,
    TABLES,
    _Geo,
    geographies,
    labels,
    table,
)
from factory.census.model import GeoSpec
from factory.errors import DataError


def population(geo: str, min_age: int = 18, max_age: int = vocab.MAX_AGE, root: str | None = None) -> float:
    """Persons in the age universe (S0101), for splitting a total in proportion to population."""
    from factory.census.model import GeoSpec, universe_factor

    g = _Geo(geo, root)
    ages = core_margins_age(g)
    probe = GeoSpec(geo, "", "", 0.0, [], [], min_age=min_age, max_age=max_age)
    return float((ages.sum(axis=1) * universe_factor(probe)).sum())


def geo_spec(geo: str, min_age: int = 18, max_age: int = vocab.MAX_AGE, root: str | None = None) -> GeoSpec:
    """Everything ACS 2018 (or a fetched folder of the same layout, `root`) says about one state."""
    geos = geographies(root).set_index("geo")
    if geo not in geos.index:
        from factory.errors import did_you_mean

        raise DataError(f"{NAME}: unknown geography '{geo}'{did_you_mean(geo, list(geos.index))}")
    g = _Geo(geo, root)
    margins = core_margins(g) + core_race_margins(g)
    blks, derived = blocks(g)
    row = geos.loc[geo]
    spec = GeoSpec(
        geo=geo,
        geo_id=str(row["geo_id"]),
        name=str(row["name"]),
        population=population(geo, min_age, max_age, root),
        core_margins=margins,
        blocks=blks,
        core_seed=core_seed(),
        derived_ages=derived,
        hispanic_race=hispanic_race(g),
        min_age=min_age,
        max_age=max_age,
        sources=[f"{NAME if root is None else root} {t}" for t in TABLES],
    )
    spec.sources += [f"skipped: {s}" for s in g.skipped]
    return spec
