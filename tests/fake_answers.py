"""A stand-in `answers` stage for the evaluate tests (used through the recipe's `module:attr` hook; tests/ is on
sys.path): every person answers every choice question in every style, deterministically from the stage seed.

Input roles: `people` (person_id, geography, weight: a full meta-persona dataset) and `questions` (question_id,
options). Output: the `answers` stage's schema (person_id, geography, weight, style, question_id, mode, sample, round,
option_order, choice, distribution, valid, invalid_reason, reasoning, text, model, seed, prompt_tokens,
completion_tokens). Every `invalid_every`-th row is an invalid answer (choice null, valid false).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Literal

from pydantic import Field

from factory.options import StageOptions
from factory.stage import Needs, StageOutput, rows_dataset
from factory.stages.answers import OUTPUTS  # the real stage's schema: the fake cannot drift from it

INPUTS = {"people": Needs("person_id", "geography", "weight"), "questions": Needs("question_id", "options")}


class FakeOptions(StageOptions):
    styles: list[str] = Field(default_factory=lambda: ["meta", "descriptive"], description="persona styles")
    mode: Literal["fast", "logprob"] = Field("fast", description="fast: a sampled choice; logprob: a distribution")
    invalid_every: int = Field(7, ge=1, description="every n-th row is invalid")


def fake_run(options: FakeOptions, inputs, ctx):
    people, questions = inputs["people"], inputs["questions"]
    geo_names = people.features["geography"].names
    rows, n = [], 0
    for person in people.select_columns(["person_id", "geography", "weight"]).to_list():
        for q in questions.select_columns(["question_id", "options"]).to_list():
            k = len(q["options"])
            if k == 0:
                continue
            for style in options.styles:
                n += 1
                rng = ctx.rng(person["person_id"], q["question_id"], style)
                invalid = n % options.invalid_every == 0
                choice = distribution = None
                if not invalid and options.mode == "fast":
                    choice = int(rng.integers(k))
                elif not invalid:
                    distribution = [float(x) for x in rng.dirichlet([1.0] * k)]
                rows.append(
                    {
                        "person_id": person["person_id"],
                        "geography": geo_names[person["geography"]],
                        "weight": person["weight"],
                        "style": style,
                        "question_id": q["question_id"],
                        "mode": options.mode,
                        "sample": 0,
                        "round": 0,
                        "option_order": list(range(k)),
                        "choice": choice,
                        "distribution": distribution,
                        "valid": not invalid,
                        "invalid_reason": "no letter in the reply" if invalid else None,
                        "reasoning": None,
                        "text": "?" if invalid else "A",
                        "model": "fake",
                        "seed": ctx.derive_seed(person["person_id"], q["question_id"], style),
                        "prompt_tokens": 10,
                        "completion_tokens": 1,
                    }
                )
    return StageOutput(rows_dataset(rows, OUTPUTS["data"]))


stage = SimpleNamespace(
    __doc__="Fake answers for evaluate tests.",
    VERSION=1,
    INPUTS=INPUTS,
    OUTPUTS=OUTPUTS,
    Options=FakeOptions,
    run=fake_run,
)
