"""Your own census marginals in a tidy CSV, raked onto the structure of a base ACS 2018 state.

Format: one row per table cell, columns

    geography   a name of your choosing ("Cambridge, MA")
    dimension   the attribute the table is about: age, sex, race_ethnicity, education, marital_status,
                employment_status, nativity, occupation, industry, class_of_worker, health_insurance, veteran,
                household_income, school_enrollment
    category    one of that attribute's categories (see `factory.census.vocab`; education also takes the coarse
                groups "Less than high school", "Some college or associate's degree", "Bachelor's degree or
                higher"); ages are ranges "25-34" or "85+" on 5-year boundaries (and 18-19)
    count       people; or `share`: the table's shares, which must sum to 1 within each condition. A file may
                have both columns, each row filling one, and each table using one kind: the age table
                needs counts (it says how many people there are), so a file of shares alone is refused
    <dimension> optional condition columns named after another dimension (e.g. `sex`, `age`): the row's
                category given that condition, so a two-way table is a one-way table per condition value

Rows with the same geography, dimension and set of filled condition columns form one table. A table of `age`
(alone or by `sex`) with counts fixes how many people there are (two such tables must agree within 1%); every
other table fixes a distribution given its conditions. Ages below 18 in a count table are taken out in proportion
to single years (15-19 counts 2/5).
Attributes without a table keep the base state's structure (the seed), so a city file can be as small as an
age x sex table.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from factory.census import acs2018, vocab
from factory.census.ipf import Margin
from factory.census.model import Block, GeoSpec, fit
from factory.errors import DataError

CORE = {"age": "age_band", **{k: k for k in vocab.CORE_DIMS if k != "age_band"}}
BLOCK_DIMS = [
    "occupation",
    "industry",
    "class_of_worker",
    "health_insurance",
    "veteran",
    "household_income",
    "school_enrollment",
]
DIMENSIONS = list(CORE) + BLOCK_DIMS
EDUCATION_GROUPS = {
    "Less than high school": [0, 1],
    "Some college or associate's degree": [3, 4],
    "Bachelor's degree or higher": [5, 6],
}
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)|\+)\s*$")


def parse_age(text: str, where: str) -> tuple[int, int]:
    m = _RANGE.match(str(text))
    if not m:
        raise DataError(f"{where}: age '{text}' is not a range like 25-34 or 85+")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else vocab.MAX_AGE
    if lo > hi:
        raise DataError(f"{where}: age range '{text}' runs backwards")
    for a, b in vocab.AGE_BANDS:  # must not cut a fine band (18 and up)
        if hi >= 18 and (a < max(lo, 18) <= b or a <= hi < b):
            raise DataError(f"{where}: age range '{text}' cuts the {a}-{b} band (use 5-year boundaries)")
    return lo, hi


@lru_cache(maxsize=8)
def read(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such marginals file") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: no rows (the file is empty)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    for col in ("geography", "dimension", "category"):
        if col not in df.columns:
            raise DataError(f"{path}: missing column '{col}'")
    kinds = [c for c in ("count", "share") if c in df.columns]
    if not kinds:
        raise DataError(f"{path}: needs a 'count' or a 'share' column")
    if df.empty:
        raise DataError(f"{path}: no rows (only a header)")
    if len(kinds) == 2:  # each row gives one: counts for the age table, shares for others, say
        has_count, has_share = df["count"].str.strip() != "", df["share"].str.strip() != ""
        wrong = (has_count == has_share).to_numpy()
        if wrong.any():
            line = int(wrong.nonzero()[0][0]) + 2
            which = "both a count and a share" if has_count.iloc[line - 2] else "neither a count nor a share"
            raise DataError(f"{path}:{line}: gives {which}; give one")
        kind = pd.Series(np.where(has_count, "count", "share"), index=df.index)
        raw = df["count"].where(has_count, df["share"])
    else:
        kind = pd.Series(kinds[0], index=df.index)
        raw = df[kinds[0]]
    extra = [c for c in df.columns if c not in ("geography", "dimension", "category", "count", "share", "note")]
    for c in extra:
        if c not in DIMENSIONS:
            from factory.errors import did_you_mean

            raise DataError(f"{path}: column '{c}' is not a dimension{did_you_mean(c, DIMENSIONS)}")
    nums = pd.to_numeric(raw, errors="coerce")
    bad = nums.isna() | ~np.isfinite(nums)
    if bad.any():
        line = int(bad.to_numpy().nonzero()[0][0]) + 2
        raise DataError(f"{path}:{line}: {kind.iloc[line - 2]} '{raw.iloc[line - 2]}' is not a number")
    if (nums < 0).any():
        line = int((nums < 0).to_numpy().nonzero()[0][0]) + 2
        raise DataError(f"{path}:{line}: negative {kind.iloc[line - 2]} {nums.iloc[line - 2]:g}")
    for line, d in enumerate(df["dimension"], start=2):
        if d not in DIMENSIONS:
            from factory.errors import did_you_mean

            raise DataError(f"{path}:{line}: unknown dimension '{d}'{did_you_mean(d, DIMENSIONS)}")
    df = df.assign(value=nums, kind=kind, line=np.arange(2, len(df) + 2))
    df.attrs["conditions"] = extra
    return df


def categories(dim: str, spec_blocks: dict[str, Block]) -> list[str]:
    if dim == "age":
        return vocab.AGE
    if dim in CORE:
        return vocab.CORE_DIMS[CORE[dim]]
    return spec_blocks[dim].categories


def category_map(dim: str, cats: list[str], where: str, spec_blocks: dict[str, Block]) -> np.ndarray:
    """Fine categories of `dim` -> index into `cats` (the table's categories), -1 outside."""
    if dim == "age":
        return vocab.band_map([parse_age(c, where) for c in cats])
    fine = categories(dim, spec_blocks)
    out = np.full(len(fine), -1)
    for i, c in enumerate(cats):
        if dim == "education" and c in EDUCATION_GROUPS:
            out[EDUCATION_GROUPS[c]] = i
        elif c in fine:
            out[fine.index(c)] = i
        else:
            from factory.errors import did_you_mean

            raise DataError(f"{where}: unknown {dim} category '{c}'{did_you_mean(c, fine)}")
    return out


class TidySource:
    def __init__(self, path: Path, base: str):
        self.path = Path(path)
        self.base = base
        self.df = read(self.path)

    def geographies(self) -> pd.DataFrame:
        names = list(dict.fromkeys(self.df["geography"]))
        return pd.DataFrame(
            {"geo": names, "geo_id": [f"tidy:{n}" for n in names], "name": names, "fips": [""] * len(names)}
        )

    def population(self, geo: str, min_age: int = 18, max_age: int = vocab.MAX_AGE) -> float:
        spec = self.geo_spec(geo, min_age, max_age, fit_base=False)
        count = [m for m in spec.core_margins if m.mode == "count"]
        return float(count[0].table.sum()) if count else 0.0

    def tables(self, geo: str):
        df = self.df[self.df["geography"] == geo]
        if df.empty:
            from factory.errors import did_you_mean

            raise DataError(
                f"{self.path}: unknown geography '{geo}'{did_you_mean(geo, list(self.geographies()['geo']))}"
            )
        conds = df.attrs["conditions"]
        key = (
            df[conds].apply(lambda r: tuple(c for c in conds if r[c] != ""), axis=1)
            if conds
            else pd.Series([()] * len(df), index=df.index)
        )
        for (dim, used), part in df.groupby([df["dimension"], key], sort=False):
            yield dim, list(used), part

    def geo_spec(self, geo: str, min_age: int = 18, max_age: int = vocab.MAX_AGE, fit_base: bool = True) -> GeoSpec:
        base_spec = acs2018.geo_spec(self.base, min_age, max_age)
        blocks = {b.name: b for b in base_spec.blocks}
        core: list[Margin] = []
        extra: dict[str, list[Margin]] = {}
        for dim, conds, part in self.tables(geo):
            where = f"{self.path}:{int(part['line'].iloc[0])}"
            margin = self._margin(dim, conds, part, where, blocks, min_age)
            if dim in BLOCK_DIMS:
                parents = blocks[dim].parents
                for c in conds:
                    if CORE.get(c, c) not in parents:
                        raise DataError(f"{where}: {dim} can be conditioned on {', '.join(parents)}, not '{c}'")
                extra.setdefault(dim, []).append(margin)
            else:
                core.append(margin)
        counts = [m for m in core if m.mode == "count"]
        if not counts:
            raise DataError(
                f"{self.path}: geography '{geo}' needs an age table (age, or age by sex) with counts"
                " (a file of shares can add a 'count' column for it)"
            )
        totals = [float(m.table.sum()) for m in counts]
        if totals[0] <= 0:  # every person would weigh 0, and the fit has nothing to scale
            raise DataError(f"{self.path}: geography '{geo}' has no people aged {min_age} to {max_age} in its counts")
        for m, total in zip(counts[1:], totals[1:]):
            if not np.isclose(total, totals[0], rtol=0.01):
                raise DataError(
                    f"{self.path}: geography '{geo}': count tables '{counts[0].name}' ({totals[0]:,.0f} people aged "
                    f"{min_age}+) and '{m.name}' ({total:,.0f}) disagree; they must agree within 1%"
                )
        base = fit(base_spec) if fit_base else None
        new_blocks = []
        for b in base_spec.blocks:
            prior = b.seed
            if base is not None:
                _, joint = base.blocks[b.name]
                totals = joint.sum(axis=-1, keepdims=True)
                prior = np.where(totals > 0, joint / np.maximum(totals, 1e-300), 0 if b.seed is None else b.seed)
            new_blocks.append(
                Block(
                    b.name,
                    b.categories,
                    b.parents,
                    extra.get(b.name, []),
                    prior,
                    f"{'your table; ' if b.name in extra else ''}seeded by {self.base} (ACS 2018)",
                )
            )
        seed = None if base is None else base.core / base.core.max()
        population = float(next(m.table.sum() for m in core if m.mode == "count"))
        return GeoSpec(
            geo=geo,
            geo_id=f"tidy:{geo}",
            name=geo,
            population=population,
            core_margins=core,
            blocks=new_blocks,
            core_seed=seed,
            derived_ages=base_spec.derived_ages,
            hispanic_race=base_spec.hispanic_race,
            seed_margins=base_spec.core_margins if fit_base else [],
            min_age=min_age,
            max_age=max_age,
            sources=[f"tidy marginals {self.path.name}", f"seed: ACS 2018 {self.base}"],
        )

    def _margin(self, dim: str, conds: list[str], part: pd.DataFrame, where: str, blocks: dict, min_age: int) -> Margin:
        kinds = set(part["kind"])
        if len(kinds) > 1:
            raise DataError(f"{where}: the {dim} table mixes counts and shares")
        (value,) = kinds
        dims = [*conds, dim]
        cats = {d: list(dict.fromkeys(part[d] if d != dim else part["category"])) for d in dims}
        shape = [len(cats[d]) for d in dims]
        table = np.zeros(shape)
        for _, row in part.iterrows():
            idx = tuple(cats[d].index(row[d] if d != dim else row["category"]) for d in dims)
            if table[idx] != 0:
                raise DataError(f"{self.path}:{int(row['line'])}: {dim} '{row['category']}' appears twice in one table")
            table[idx] = row["value"]
        if value == "share":
            sums = table.sum(axis=-1)
            off = ~np.isclose(sums, 1.0, atol=0.01)
            if off.any():  # name the condition whose shares are off, with its own sum
                at = tuple(int(i) for i in np.argwhere(off)[0])
                given = ", ".join(f"{d} '{cats[d][i]}'" for d, i in zip(dims[:-1], at))
                given = f" (given {given})" if given else ""
                raise DataError(f"{where}: {dim} shares sum to {float(sums[at]):.3f}, not 1{given}")
        names = {d: CORE.get(d, d) for d in dims}
        maps = {names[d]: category_map(d, cats[d], where, blocks) for d in dims}
        count = value == "count" and set(dims) <= {"age", "sex"} and "age" in dims
        if count:  # only the adult part of an age group counts (15-19 -> 18-19 is 2/5 of it)
            axis = dims.index("age")
            ranges = [parse_age(c, where) for c in cats["age"]]
            frac = np.array([max(0, hi - max(lo, min_age) + 1) / (hi - lo + 1) for lo, hi in ranges])
            table = table * frac.reshape([-1 if i == axis else 1 for i in range(len(dims))])
            keep = frac > 0
            if not keep.all():
                table = np.compress(keep, table, axis=axis)
                cats["age"] = [c for c, k in zip(cats["age"], keep) if k]
                maps["age_band"] = category_map("age", cats["age"], where, blocks)
        if dim in BLOCK_DIMS and "employment_status" in blocks[dim].parents and "employment_status" not in conds:
            # occupation etc. are about the employed: add the universe as a condition
            emp = (
                np.array([0, -1, -1, -1])
                if dim in ("occupation", "industry", "class_of_worker")
                else np.array([0, 0, -1, 0])
            )
            maps["employment_status"] = emp
            table = table[None]
            dims = ["employment_status", *dims]
            names["employment_status"] = "employment_status"
        given = tuple(names[d] for d in dims[:-1])
        return Margin(
            f"{self.path.stem} {dim}" + (f" x {' x '.join(conds)}" if conds else ""),
            tuple(names[d] for d in dims),
            maps,
            table,
            mode="count" if count else "share",
            given=() if count else given,
        )
