"""Stand-ins for the stages around `preferences` and `trait_control` (recipe hooks; tests/ is on sys.path).

`free_text`: an `answers`-shaped stage writing free-text answers without a model: every one of the first `n`
people answers every open question `samples` times in styles meta and base, with texts that differ by person,
style and sample. `train_dpo`: a `train_dpo`-shaped stage whose output is a one-row training log and whose
artifacts/adapter/ holds a randomly initialised LoRA adapter on `model` (written by `summarize`, which gets the
stage's artifacts folder), with the real adapter's layout: adapter_config.json naming the base model.
"""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import Field

from factory.options import StageOptions
from factory.stage import Columns, Needs, StageOutput, rows_dataset
from factory.stages.answers import OUTPUTS as ANSWERS  # the real stage's schema: the fake cannot drift from it

WORDS = ["calmly", "with friends", "after a careful plan", "with some worry", "alone", "kindly", "boldly"]


class FreeTextOptions(StageOptions):
    n: int = Field(4, ge=1)
    samples: int = Field(2, ge=1)


def free_text(options: FreeTextOptions, inputs, ctx):
    people, questions = inputs["people"], inputs["questions"]
    rows = []
    for i, pid in enumerate(people["person_id"][: options.n]):
        for q in questions.select_columns(["question_id", "kind", "text"]).to_list():
            if q["kind"] != "open":
                continue
            for style in ("meta", "base"):
                for s in range(options.samples):
                    k = (3 * i + 2 * s + (style == "base")) % len(WORDS)
                    rows.append(
                        {"person_id": pid, "geography": "WY", "weight": 1.0, "style": style,
                         "question_id": q["question_id"], "mode": "free_text", "sample": s, "round": 0,
                         "option_order": [], "choice": None, "distribution": None, "valid": True,
                         "invalid_reason": None, "reasoning": None,
                         "text": f"I would handle it {WORDS[k]}, {WORDS[(k + i) % len(WORDS)]}.", "model": "fake",
                         "seed": s, "prompt_tokens": 1, "completion_tokens": 1}
                    )  # fmt: skip
    return StageOutput(rows_dataset(rows, ANSWERS["data"]))


class TrainOptions(StageOptions):
    model: str = Field(..., description="base model folder")
    r: int = Field(4, ge=1)


def train(options: TrainOptions, inputs, ctx):
    return [{"step": 1, "loss": 0.69, "pairs": len(inputs["pairs"])}]


def save_adapter(base: str, out, r: int = 4, seed: int = 0) -> None:
    """A LoRA adapter on `base` with random (non-zero) weights, so it changes what the model writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(out))


def summarize_train(options: TrainOptions, outputs, ctx, artifacts) -> dict:
    save_adapter(options.model, artifacts / "adapter", options.r, ctx.seed % 1000)
    return {"steps": 1}


free_text_stage = SimpleNamespace(
    __doc__="Fake free-text answers.",
    VERSION=1,
    INPUTS={"people": Needs("person_id", "weight"), "questions": Needs("question_id", "kind", "text", "options")},
    OUTPUTS=ANSWERS,
    Options=FreeTextOptions,
    run=free_text,
)
train_dpo = SimpleNamespace(
    __doc__="Fake DPO training.",
    VERSION=1,
    INPUTS={"pairs": Needs("prompt", "chosen", "rejected")},
    OUTPUTS={"data": Columns({"step": "int64", "loss": "float64", "pairs": "int64"})},
    Options=TrainOptions,
    run=train,
    summarize=summarize_train,
)
