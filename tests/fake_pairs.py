"""A `preferences`-shaped stage for training tests: `n` preference pairs in TRL's conversational format (system +
user prompt, one assistant message each for chosen and rejected), a `split` column (the last `n_test` pairs are
'test'), and the metadata columns a real pair dataset carries, which training must ignore."""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import Field

from factory.options import StageOptions
from factory.stage import Columns

INPUTS: dict = {}  # a source stage
COLUMNS = {
    "question_id": "string",
    "prompt": "any",
    "chosen": "any",
    "rejected": "any",
    "split": "string",
    "target": "string",
    "target_vector": "list<float64>",
    "chosen_score": "float64",
    "rejected_score": "float64",
    "margin": "float64",
}

SYSTEM = "You are simulating a personality-rich human response."
TOPICS = ["money", "criticism", "risk", "trust", "conflict", "empathy", "meaning", "support"]


class Options(StageOptions):
    n: int = Field(16, ge=1)
    n_test: int = Field(4, ge=0)
    drop: list[str] = Field(default_factory=list, description="columns to leave out (a malformed dataset)")


def run(options: Options, inputs: dict, ctx):
    rows = []
    for i in range(options.n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append(
            {
                "question_id": f"q{i:03d}",
                "prompt": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"How do you feel about {topic} ({i})?"},
                ],
                "chosen": [{"role": "assistant", "content": f"I think about {topic} calmly; I am 41 and a nurse."}],
                "rejected": [{"role": "assistant", "content": "No."}],
                "split": "test" if i >= options.n - options.n_test else "train",
                "target": "diplomat",
                "target_vector": [0.9, 0.5, 0.45, 0.9, 0.6],
                "chosen_score": 0.8,
                "rejected_score": 0.4,
                "margin": 0.4,
            }
        )
    return [{k: v for k, v in r.items() if k not in options.drop} for r in rows]


def outputs(options: Options) -> dict[str, Columns]:
    return {"data": Columns({k: t for k, t in COLUMNS.items() if k not in options.drop})}


stage = SimpleNamespace(
    Options=Options, run=run, VERSION=1, INPUTS=INPUTS, outputs=outputs, __doc__="fake preference pairs"
)


class JudgedOptions(StageOptions):
    n: int = Field(4, ge=1)


def judged_run(options: JudgedOptions, inputs: dict, ctx):
    """Pairs with every column (and the exact features) the `preferences` stage writes under its judge rule."""
    from factory.stages.preferences import features

    targets = {"diplomat": [0.9, 0.5, 0.45, 0.9, 0.6], "analyst": [0.85, 0.8, 0.3, 0.25, 0.35]}
    rows = []
    for i in range(options.n):
        topic = TOPICS[i % len(TOPICS)]
        target = list(targets)[i % 2]
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"How do you feel about {topic} ({i})?"},
                ],
                "chosen": [{"role": "assistant", "content": f"{topic.capitalize()} matters to me; I weigh it ({i})."}],
                "rejected": [{"role": "assistant", "content": f"Whatever about {topic} ({i})."}],
                "target": target,
                "target_vector": targets[target],
                "chosen_score": 0.9 - 0.01 * i,
                "rejected_score": 0.3,
                "margin": 0.6 - 0.01 * i,
                "chosen_vector": targets[target],
                "rejected_vector": [0.5, 0.5, 0.5, 0.5, 0.5],
                "question_id": f"q{i:03d}",
                "rule": "judge",
                "judge": "fake-org/fake-judge",
                "chosen_person_id": f"p{i:03d}",
                "rejected_person_id": f"b{i:03d}",
                "rejected_style": "base" if i % 2 else "meta",
                "state": ["Wyoming", "Texas"][i % 2],
                "age_band": ["25-34", "65+"][i % 2],
                "split": "test" if i == options.n - 1 else "train",
            }
        )
    from datasets import Dataset

    return Dataset.from_list(rows, features=features())


def judged_outputs(options: JudgedOptions) -> dict[str, Columns]:
    from factory.stages.preferences import PAIRS

    return {"data": PAIRS}


judged = SimpleNamespace(
    Options=JudgedOptions,
    run=judged_run,
    VERSION=1,
    INPUTS=INPUTS,
    outputs=judged_outputs,
    __doc__="fake judged preference pairs",
)
