"""A `personas`-shaped stage for tests that need personas whatever the tiny model writes: the first `n` people
get a short written persona in each of `styles`; the person with index `skip` gets none of the last style.

Input role: `people` (person_id). Output: person_id, style, persona (the columns the answers stage reads)."""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import Field

from factory.options import StageOptions
from factory.stage import Columns, Needs

INPUTS = {"people": Needs("person_id")}
OUTPUTS = {"data": Columns({"person_id": "string", "style": "string", "persona": "string"})}


class Options(StageOptions):
    n: int = Field(4, ge=1)
    styles: list[str] = Field(default_factory=lambda: ["descriptive"])
    skip: int | None = Field(None, description="this person lacks a persona of the last style (a failed persona)")


def run(options: Options, inputs: dict, ctx):
    people = inputs["people"]
    rows = []
    for i, pid in enumerate(people["person_id"][: options.n]):
        for style in options.styles:
            if i == options.skip and style == options.styles[-1]:
                continue
            rows.append({"person_id": pid, "style": style, "persona": f"A person ({style}) numbered {i}."})
    return rows


stage = SimpleNamespace(Options=Options, run=run, VERSION=1, INPUTS=INPUTS, OUTPUTS=OUTPUTS, __doc__="fake personas")
