"""Regenerate `factory/training/dpo_config_fields.json`: every `trl.DPOConfig` field and its simple type.

`factory validate` checks a recipe's `train_dpo.dpo` keys and value types against that file (read as `FIELDS_FILE`
by `factory/training/config.py`), so validating never imports trl, transformers or torch. Rerun this script
whenever the trl pin changes; a test regenerates the table in memory and fails when it no longer matches the
installed trl.

    .venv/bin/python scripts/dpo_config_fields.py

Types are written as `|`-joined names from int, float, bool, str, list, dict, null and any (enums are str, a
`Literal[False]` is bool, anything else is any), e.g. `"max_length": "int|null"`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "factory" / "training" / "dpo_config_fields.json"
ORDER = ["int", "float", "bool", "str", "list", "dict", "null", "any"]


def simple_types(annotation) -> set[str]:
    if annotation is type(None) or annotation is None:
        return {"null"}
    if annotation is typing.Any:
        return {"any"}
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(simple_types(a) for a in typing.get_args(annotation)))
    if origin is typing.Literal:
        return set().union(*(simple_types(type(v)) for v in typing.get_args(annotation)))
    if origin in (list, tuple) or annotation in (list, tuple):
        return {"list"}
    if origin is dict or annotation is dict:
        return {"dict"}
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return {"str"}
        for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str)):
            if issubclass(annotation, kind):
                return {name}
    return {"any"}


def generate() -> dict[str, str]:
    """Field name -> simple type, in the order DPOConfig declares its fields, plus the trl version."""
    import trl

    hints = typing.get_type_hints(trl.DPOConfig)
    fields = {}
    for f in dataclasses.fields(trl.DPOConfig):
        kinds = simple_types(hints.get(f.name, f.type))
        fields[f.name] = "any" if "any" in kinds else "|".join(k for k in ORDER if k in kinds)
    return {"trl": trl.__version__, "fields": fields}


def main() -> None:
    OUT.write_text(json.dumps(generate(), indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
