"""Stages used by the publishing tests through the recipe's `module:attr` hook (tests/ is on sys.path).

`adapter` stands in for train_dpo: its output is a one-row training log and its summarize writes a real PEFT LoRA
adapter into `artifacts/adapter/`, made on a micro Llama with random weights built in the stage's work folder
(seeded: the same bytes every build; a few hundred milliseconds, where the session's trained tiny model takes most
of a minute on two cores). `adapter_eval` stands in for trait_control: it reads the adapter stage and writes a
summary and a plot. `echo` returns its one input unchanged (to read a hub:// input back).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from pydantic import Field

from factory.options import StageOptions
from factory.stage import Columns, Needs, StageOutput


class AdapterOptions(StageOptions):
    model: str = Field("factory-tests/micro-llama", description="the base model id recorded for the card")
    r: int = Field(2, ge=1, description="LoRA rank")
    dpo: dict = Field(default_factory=lambda: {"beta": 0.1, "max_steps": 1}, description="recorded DPO settings")


def adapter_run(options: AdapterOptions, inputs, ctx):
    return [{"split": "train", "step": 1, "loss": 0.6931}]


def micro_llama(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def adapter_summarize(options: AdapterOptions, outputs, ctx, artifacts: Path) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = micro_llama(Path(ctx.workdir) / "base")
    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=options.r, lora_alpha=2 * options.r, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    out = artifacts / "adapter"
    model.save_pretrained(out)
    (out / "training_args.json").write_text(json.dumps(options.dpo, sort_keys=True) + "\n")
    (out / "training_args.bin").write_bytes(b"a pickle that must never be published")
    return {"final_train_loss": 0.6931, "steps": 1}


def adapter_eval_run(options: StageOptions, inputs, ctx):
    from datasets import Dataset, Features, Value

    rows = [
        {"trait": "openness", "model": "base", "score": 0.4},
        {"trait": "openness", "model": "adapter", "score": 0.6},
    ]
    features = Features({"question_id": Value("string"), "reason": Value("string")})
    skipped = Dataset.from_dict({"question_id": [], "reason": []}, features=features)
    return StageOutput(rows, extras={"skipped": skipped})  # an empty extra: named in the card, not a config


def adapter_eval_summarize(options: StageOptions, outputs, ctx, artifacts: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.bar(["base", "adapter"], [0.4, 0.6])
    fig.savefig(artifacts / "trait_control.png", dpi=40, metadata={"Software": None})
    plt.close(fig)
    return {
        "judge": "fake-judge",
        "targets": {"Diplomat": {"adapter": {"openness": 0.6}, "base": {"openness": 0.4}, "moved_share": 1.0}},
    }


def echo_run(options: StageOptions, inputs, ctx):
    return inputs["source"]


adapter = SimpleNamespace(
    __doc__="Fake DPO adapter for publishing tests: a training log, and a LoRA adapter in artifacts/adapter/.",
    VERSION=1,
    INPUTS={"pairs": Needs()},
    OUTPUTS={"data": Columns({"split": "string", "step": "int64", "loss": "float64"})},
    Options=AdapterOptions,
    run=adapter_run,
    summarize=adapter_summarize,
)
adapter_eval = SimpleNamespace(
    __doc__="Fake trait-control evaluation of an adapter: scores per trait, a summary and a plot.",
    VERSION=1,
    INPUTS={"adapter": Needs()},
    OUTPUTS={
        "data": Columns({"trait": "string", "model": "string", "score": "float64"}),
        "skipped": Columns({"question_id": "string", "reason": "string"}),
    },
    Options=StageOptions,
    run=adapter_eval_run,
    summarize=adapter_eval_summarize,
)
echo = SimpleNamespace(
    __doc__="Returns its one input unchanged.",
    VERSION=1,
    INPUTS={"source": Needs()},
    OUTPUTS={"data": Columns({}, open=True)},
    Options=StageOptions,
    run=echo_run,
)
