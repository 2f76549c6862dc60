"""Typed option models shared by stages and backends.

Every knob is a pydantic field with a default and help text. A field declared with `operational(...)` (batch
sizes, concurrency, URLs, devices) tunes *how* a stage runs, not *what* it produces, so it is left out of the
stage fingerprint. A `DataFile` field is a path that must exist; its bytes are hashed into the fingerprint (an
`OptionalDataFile` may be absent, which fingerprints as absent).
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import core_schema

OPERATIONAL = "operational"


def operational(default: Any = None, description: str = "", **kwargs: Any) -> Any:
    """A field that never changes results (batch size, concurrency, URL, device) and so never the fingerprint."""
    return Field(default, description=description, json_schema_extra={OPERATIONAL: True}, **kwargs)


class OptionBlock(BaseModel):
    """Base for all option models (nested option blocks, backend configs, stage options): unknown keys are errors,
    assignment is validated, and a number is never a boolean (pydantic reads `seed: true` as 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            kinds = _kinds(cls.model_fields[info.field_name].annotation)
            if kinds & {int, float} and not kinds & {bool, Any}:
                raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def _kinds(annotation: Any) -> set[Any]:
    """The plain types an annotation admits at its top level (`int | None` -> {int, NoneType})."""
    args = typing.get_args(annotation)
    if args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {k for a in args for k in _kinds(a)}
    return {typing.get_origin(annotation) or annotation}


class StageOptions(OptionBlock):
    """Options every stage accepts, beside its own."""

    batch_size: int | None = operational(
        None,
        description="rows per checkpointed batch; smaller resumes closer to a crash, larger has less overhead",
        ge=1,
    )


class DataFile(str):
    """A path to a data file, as written in the recipe (relative to the recipe's folder), known to exist.

    `resolved` is the absolute path. The written form is what the fingerprint records (so moving a checkout does
    not invalidate caches); the file's bytes are what it hashes.
    """

    resolved: Path

    def __new__(cls, written: str, resolved: Path) -> DataFile:
        obj = super().__new__(cls, written)
        obj.resolved = resolved
        return obj

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(
            cls._validate,
            core_schema.union_schema([core_schema.is_instance_schema(cls), core_schema.str_schema()]),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    _what = "file"

    @staticmethod
    def _exists(path: Path) -> bool:
        return path.is_file()

    def __reduce__(self):  # keep the resolved path when pickled to another executor
        return (type(self), (str(self), self.resolved))

    @classmethod
    def _validate(cls, value: Any, info: ValidationInfo) -> DataFile:
        if isinstance(value, cls):
            return value
        resolved = _resolve(value, info)
        if not cls._exists(resolved):
            raise ValueError(f"{cls._what} not found: {value}")
        return cls(value, resolved)


def _resolve(value: str, info: ValidationInfo) -> Path:
    base = Path((info.context or {}).get("base_dir", "."))
    path = Path(value).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


class OptionalDataFile(DataFile):
    """A data file that another command writes and that may not exist yet (the review decisions `factory review
    import` writes). Its bytes enter the fingerprint once it exists; before that it fingerprints as absent, so
    writing (or rewriting) it gives the stage a new fingerprint, and the same bytes give the same one."""

    @classmethod
    def _validate(cls, value: Any, info: ValidationInfo) -> DataFile:
        if isinstance(value, cls):
            return value
        resolved = _resolve(value, info)
        if resolved.is_dir():
            raise ValueError(f"expected a file, found a folder: {value}")
        return cls(value, resolved)


class DataDir(DataFile):
    """A folder of data files (as written in the recipe), known to exist; every file's bytes are hashed."""

    _what = "folder"

    @staticmethod
    def _exists(path: Path) -> bool:
        return path.is_dir()


def operational_fields(model: type[BaseModel]) -> set[str]:
    return {
        name
        for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(OPERATIONAL)
    }


def semantic_dump(value: Any) -> Any:
    """JSON-ready view of options with operational fields removed, recursively through nested models."""
    if isinstance(value, BaseModel):
        skip = operational_fields(type(value))
        out = {}
        for k, f in type(value).model_fields.items():
            v = getattr(value, k)
            # an option added to a stage later, left unset, keeps the fingerprints of recipes that predate it
            omit = isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("fingerprint") == "omit_if_none"
            if k not in skip and not (v is None and omit):
                out[k] = semantic_dump(v)
        return out
    if isinstance(value, dict):
        return {str(k): semantic_dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [semantic_dump(v) for v in value]
    if isinstance(value, DataFile):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def data_files(value: Any) -> list[DataFile]:
    """Every DataFile reachable from an options object, in field order."""
    found: list[DataFile] = []
    if isinstance(value, DataFile):
        found.append(value)
    elif isinstance(value, BaseModel):
        for k in type(value).model_fields:
            found += data_files(getattr(value, k))
    elif isinstance(value, dict):
        for v in value.values():
            found += data_files(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found += data_files(v)
    return found


class BackendRef(str):
    """The name of a backend the recipe declares under `backends:`, as a stage option (`backend: small`).

    Typed, so the recipe checks the name exists and the fingerprint finds every backend a stage uses (nested
    blocks too) by this type rather than by field name; it hashes as the plain name."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.str_schema(min_length=1),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


def backend_refs(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field path, backend name) of every `BackendRef` in an options object, in field order."""
    found: list[tuple[str, str]] = []
    if isinstance(value, BackendRef):
        found.append((prefix.rstrip("."), str(value)))
    elif isinstance(value, BaseModel):
        for k in type(value).model_fields:
            found += backend_refs(getattr(value, k), f"{prefix}{k}.")
    elif isinstance(value, dict):
        for k, v in value.items():
            found += backend_refs(v, f"{prefix}{k}.")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found += backend_refs(v, f"{prefix.rstrip('.')}[{i}].")
    return found
