"""Train a LoRA adapter on preference pairs with TRL's DPOTrainer; the reference is the base with the adapter off.

Input (role `pairs`): one preference-pair dataset in TRL's conversational preference format (the `preferences` stage):
    prompt (list of {role, content}: system + user), chosen and rejected (each [{role: assistant, content}]),
    split ('train' | 'test'; without it every pair trains). Other columns (target, scores, margin...) are ignored.
Output (one row per logged step; eval rows at the end and wherever `dpo.eval_strategy` asks):
    split (str: train | eval), step (int32), epoch (float32), loss, grad_norm, learning_rate, rewards/chosen,
    rewards/rejected, rewards/margins, rewards/accuracies, logps/chosen, logps/rejected, logits/chosen,
    logits/rejected, entropy, mean_token_accuracy, num_tokens (float64; null where a row has no such value), plus
    any further number TRL logs (other loss types). Timings stay out of the rows so the output is reproducible.
Artifacts: artifacts/adapter/ (adapter_model.safetensors, adapter_config.json, tokenizer files,
    training_args.json = the DPOConfig used, metrics.json); summary in the manifest: final train loss, eval metrics,
    steps, tokens/s, seconds, whether the reference log-probs came from the cache.

The reference model is the base model with the adapter disabled (one copy of the weights, never a second model;
the personality study loaded a redundant 8-bit reference). Reference log-probs are computed once per pair dataset,
base model (and its weights' sha256 or Hub commit), precision, device and truncation settings, and cached in
`<runs>/<recipe>/.cache/ref_logps/`, outside any stage fingerprint, so a sweep over beta, learning rate or steps
pays for them once. Checkpoints go to the stage's work folder every `save_steps`; a rerun after a crash resumes
from the last complete one. The seed is the stage seed; on CPU the same recipe gives the same adapter bytes.
Prompts are tokenized by the chat template alone (no second BOS: the study's bug); a duplicated BOS is an error.

Example:
    stages:
      diplomat_adapter:
        uses: train_dpo
        inputs: [diplomat_pairs]
        model: meta-llama/Meta-Llama-3-8B-Instruct   # omit on CPU: the embedded SmolLM2-135M-Instruct
        lora: {r: 32, alpha: 64, target_modules: all-linear}
        dpo: {beta: 0.01, learning_rate: 2.0e-5, lr_scheduler_type: cosine, warmup_steps: 7, max_steps: 50,
              per_device_train_batch_size: 6, gradient_accumulation_steps: 4, max_length: 1024}
        load_in: 8bit            # GPU only, needs bitsandbytes
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from factory.errors import StageError
from factory.options import StageOptions, operational
from factory.stage import Columns, Needs, StageContext, StageOutput
from factory.training.config import DPO_DEFAULTS, LoraOptions, check_dpo
from factory.training.dpo import LOG_COLUMNS

VERSION = 1
INPUTS = {"pairs": Needs("prompt", "chosen", "rejected", description="TRL preference pairs (preferences, review)")}
OUTPUTS = {
    # the training log: one row per logged step; further numbers TRL logs (other loss types) follow
    "data": Columns({"split": "string", "step": "int32", "epoch": "float32", **dict.fromkeys(LOG_COLUMNS, "float64")},
                    open=True),
}  # fmt: skip


class Options(StageOptions):
    model: str | None = Field(
        None, description="Hub id or local folder of the base model; default: the embedded SmolLM2-135M (CPU only)"
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of `model`")
    lora: LoraOptions = Field(default_factory=LoraOptions, description="the LoRA adapter")
    dpo: dict[str, Any] = Field(
        default_factory=dict,
        description="passed to trl.DPOConfig (beta, learning_rate, max_steps, num_train_epochs, "
        "per_device_train_batch_size, gradient_accumulation_steps, max_length, loss_type, ...); factory defaults: "
        + ", ".join(f"{k}={v}" for k, v in DPO_DEFAULTS.items()),
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 on a GPU that supports it, float32 otherwise"
    )
    load_in: Literal["4bit", "8bit"] | None = Field(
        None, description="quantize the frozen base with bitsandbytes (QLoRA); GPU only"
    )
    eval_split: str | None = Field("test", description="`split` value of the pairs to evaluate on; null: no eval")
    gradient_checkpointing: bool = operational(True, description="recompute activations: less memory, ~30% slower")
    save_steps: int = operational(50, ge=1, description="optimizer steps between checkpoints (for crash recovery)")

    @field_validator("dpo")
    @classmethod
    def _dpo(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_dpo(value)


def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    from factory.training.dpo import input_identity, train

    pairs = inputs["pairs"]
    upstream = ctx.upstream.get("pairs")
    identity = input_identity(pairs, upstream.fingerprint, upstream.content_hash) if upstream else None
    data, metrics = train(
        options,
        pairs,
        stage=ctx.stage,
        seed=ctx.seed,
        workdir=ctx.workdir,
        cache_dir=ctx.cache_dir,
        pairs_identity=identity,
    )
    return StageOutput(data, metrics=metrics)


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts: Path) -> dict:
    adapter = Path(ctx.workdir or "") / "adapter"
    if not (adapter / "metrics.json").is_file():
        raise StageError(f"stages.{ctx.stage}: the trained adapter is missing from {adapter}; rebuild with --force")
    shutil.copytree(adapter, artifacts / "adapter", dirs_exist_ok=True)
    return json.loads((adapter / "metrics.json").read_text())["summary"]
