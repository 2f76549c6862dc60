"""Read any dataset (Hub, folder repo, parquet/CSV/JSONL, save_to_disk) as people, personas, questions or answers.

Input roles: none (a source stage).
Output `data`: the role's columns that the recipe maps, plus its required ones (`factory.external.roles`):
    people     person_id (str; default '<split>-<row>'), weight (float64; default 1.0), then any of geography
               (label: state postal code), age (int16), age_band, sex, race_ethnicity, race, education,
               school_enrollment, marital_status, relationship, household_type, employment_status, occupation,
               industry, class_of_worker, household_income, health_insurance, veteran_status, language,
               english_ability, nativity, citizenship (labels with the meta_personas categories) and the Big
               Five traits (float32)
    personas   person_id, style, persona (str)
    questions  question_id, source, source_id, topic, text, kind ('choice' | 'open'), options (list[str]), ...
    answers    person_id, geography, style, question_id, mode, round, choice, distribution, valid

Example (a Nemotron-Personas-like Hub dataset as people; `factory/external/` has the details):
    stages:
      people:
        uses: dataset
        from: hub://nvidia/Nemotron-Personas@<commit>
        split: train
        role: people
        columns: {uuid: person_id, sex: sex, age: age, state: geography, education_level: education}
        values:
          education: {high_school: "High school graduate (includes equivalency)", bachelors: "Bachelor's degree"}
        sample: 1000

`columns:` maps source columns to role columns, `values:` maps a role column's source values (as text) to the
role's categories, `constants:` gives a role column one value (a persona source's `style`). A value outside the
categories, a wrong type, a missing column or revision, or no network is one line naming dataset, column and row.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, PlainSerializer, PlainValidator, ValidationInfo, field_validator, model_validator

from factory.errors import did_you_mean
from factory.options import DataFile, StageOptions
from factory.stage import Columns, StageContext, StageOutput

VERSION = 1
INPUTS: dict = {}  # a source stage
ROLE_NAMES = ("people", "personas", "questions", "answers")


def _source(value: Any, info: ValidationInfo) -> Any:
    from factory.external.source import HubSource, parse_source

    if isinstance(value, (HubSource, DataFile)):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("expected hub://org/name@revision, hub+file://path@revision or a local path")
    return parse_source(value, (info.context or {}).get("base_dir", "."))


SourceField = Annotated[Any, PlainValidator(_source), PlainSerializer(str)]


class Options(StageOptions):
    from_: SourceField = Field(..., alias="from", description="hub://org/name@revision, hub+file://..., or a path")
    config: str | None = Field(None, description="the dataset's config (Hub datasets)")
    split: list[str] | None = Field(None, description="split(s) to read, in order (default: all)")
    role: Literal["people", "personas", "questions", "answers"] = Field(..., description="the schema to map onto")
    columns: dict[str, str] = Field(..., description="source column -> role column")
    values: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="role column -> {source value: role value} (categories, codes, typos)"
    )
    constants: dict[str, Any] = Field(default_factory=dict, description="role column -> one value for every row")
    sample: int | None = Field(None, ge=1, description="seeded sample of this many rows (default all)")

    @field_validator("split", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _mapping(self) -> Options:
        from factory.external.roles import role

        schema = role(self.role)
        known = list(schema.columns)
        seen: dict[str, str] = {}
        for src, col in self.columns.items():
            if col not in schema.columns:
                raise ValueError(f"columns.{src}: '{col}' is not a {self.role} column{did_you_mean(col, known)}")
            if col in seen:
                raise ValueError(f"columns: '{seen[col]}' and '{src}' both map to {col}")
            seen[col] = src
        for col in self.values:
            if col not in seen:
                hint = f" (values are keyed by role column: '{self.columns[col]}')" if col in self.columns else ""
                raise ValueError(f"values.{col}: '{col}' is not a mapped {self.role} column{hint}")
        for col in self.constants:
            if col not in schema.columns or col in seen:
                why = "is also mapped from a column" if col in seen else f"is not a {self.role} column"
                raise ValueError(f"constants.{col}: '{col}' {why}{'' if col in known else did_you_mean(col, known)}")
        for col in schema.required:
            if col not in seen and col not in self.constants and col not in schema.defaults:
                raise ValueError(f"columns: nothing maps to {col}, which role {self.role} needs")
        return self


def _mapping(options: Options) -> Any:
    from factory.external.mapping import Mapping
    from factory.external.roles import role

    columns = {col: src for src, col in options.columns.items()}
    return Mapping(str(options.from_), role(options.role), columns, options.values, options.constants)


@lru_cache(maxsize=4)
def _parts(source: Any, split: tuple[str, ...] | None, config: str | None, cache_dir: str | None, _: Any) -> list:
    """Opened once per process and source (a CSV's row count is a scan); `_` is the local files' sizes and times,
    so a file rewritten in place is opened again."""
    from factory.external.source import open_parts

    return open_parts(source, list(split) if split else None, config, cache_dir)


def _open(options: Options, ctx: StageContext) -> list:
    from factory.external.source import signature

    split = tuple(options.split) if options.split else None
    cache_dir = str(ctx.cache_dir) if ctx.cache_dir else None
    parts = _parts(options.from_, split, options.config, cache_dir, signature(options.from_))
    from factory.external.mapping import check_source_columns

    check_source_columns(_mapping(options), parts[0].columns)
    return parts


def _selection(options: Options, ctx: StageContext, parts: list) -> Any:
    from factory.external.reader import selection

    total = sum(p.num_rows for p in parts)
    return selection(str(options.from_), total, options.sample, ctx.derive_seed("sample"))


def plan(options: Options, inputs: dict, ctx: StageContext) -> list[dict]:
    n = len(_selection(options, ctx, _open(options, ctx)))
    size = options.batch_size or 10_000
    return [{"start": i, "stop": min(i + size, n)} for i in range(0, max(n, 1), size)]


def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    from factory.external.mapping import apply
    from factory.external.reader import read

    parts = _open(options, ctx)
    chosen = _selection(options, ctx, parts)[ctx.batch["start"] : ctx.batch["stop"]]
    table, rows = read(parts, chosen, list(options.columns))
    data = apply(_mapping(options), table, rows)
    return StageOutput(data, metrics={"rows": float(len(chosen))})


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts) -> dict:
    parts = _open(options, ctx)
    return {
        "source": str(options.from_),
        "splits": {p.split: p.num_rows for p in parts},
        "source_rows": sum(p.num_rows for p in parts),
        "rows": len(outputs["data"]),
        "columns": dict(options.columns),
    }


def outputs(options: Options) -> dict[str, Columns]:
    """The role's columns this mapping fills, in the role's order."""
    mapping = _mapping(options)
    return {"data": Columns({c: mapping.role.columns[c] for c in mapping.output_columns()})}
