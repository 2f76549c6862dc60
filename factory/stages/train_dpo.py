"""Train a LoRA adapter on preference pairs with TRL's DPOTrainer; the reference is the base with the adapter off.

Input: one preference-pair dataset in TRL's conversational preference format (the `preferences` stage):
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
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from factory.errors import StageError, did_you_mean
from factory.options import Options as OptionsBase
from factory.options import StageOptions, operational
from factory.stage import StageContext, StageOutput

VERSION = 1
INPUTS = (1, 1)
FIELDS_FILE = Path(__file__).resolve().parents[1] / "training" / "dpo_config_fields.json"

# what the factory passes to DPOConfig unless the recipe says otherwise
DPO_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1,  # the training log is this stage's output: one row per optimizer step
    "precompute_ref_batch_size": 8,  # fixed, so the cached reference log-probs survive a change of train batch size
    "disable_tqdm": True,  # the factory shows its own progress
}

# DPOConfig keys a recipe may not set, and why: the factory sets them itself or they contradict how the stage works
REFUSED: dict[str, str] = {
    "output_dir": "checkpoints go to the stage's work folder",
    "logging_dir": "the training log is the stage's output dataset",
    "overwrite_output_dir": "checkpoints go to the stage's work folder",
    "seed": "derived from the recipe seed (set `seed:` at the recipe's top level)",
    "data_seed": "derived from the recipe seed (set `seed:` at the recipe's top level)",
    "report_to": "the training log is the stage's output dataset; no trackers",
    "precompute_ref_log_probs": "always on: reference log-probs are precomputed once and cached",
    "resume_from_checkpoint": "a rerun after a crash resumes from the last checkpoint by itself",
    "save_strategy": "set the stage's `save_steps` option",
    "save_steps": "set the stage's `save_steps` option (it does not change the fingerprint)",
    "save_total_limit": "checkpoints only serve crash recovery; the factory keeps the last two",
    "save_only_model": "checkpoints must hold the optimizer state to resume exactly",
    "load_best_model_at_end": "checkpoints only serve crash recovery and are deleted after training",
    "bf16": "set the stage's `precision` option",
    "fp16": "set the stage's `precision` option",
    "bf16_full_eval": "set the stage's `precision` option",
    "fp16_full_eval": "set the stage's `precision` option",
    "use_cpu": "the device is the machine's GPU when it has one, else the CPU",
    "gradient_checkpointing": "set the stage's `gradient_checkpointing` option",
    "model_init_kwargs": "set the stage's `model`, `revision`, `precision` and `load_in` options",
    "trust_remote_code": "a recipe never runs code from a model repository",
    "push_to_hub": "publishing is the recipe's `publish` block",
    "hub_model_id": "publishing is the recipe's `publish` block",
    "hub_token": "publishing is the recipe's `publish` block (and a token never belongs in a recipe)",
    "hub_strategy": "publishing is the recipe's `publish` block",
    "hub_private_repo": "publishing is the recipe's `publish` block",
    "hub_always_push": "publishing is the recipe's `publish` block",
    "hub_revision": "publishing is the recipe's `publish` block",
    "sync_ref_model": "the reference is the frozen base (adapter disabled) with cached log-probs",
    "ref_model_mixup_alpha": "the reference is the frozen base (adapter disabled) with cached log-probs",
    "ref_model_sync_steps": "the reference is the frozen base (adapter disabled) with cached log-probs",
    "remove_unused_columns": "the stage hands TRL only the columns it reads",
}
SINGLE_AS_LIST = {"loss_type"}  # DPOConfig turns `loss_type: sigmoid` into ["sigmoid"] itself


@cache
def dpo_fields() -> dict[str, str]:
    """DPOConfig field -> simple type ('float', 'int|null', ...), from the file shipped with the package."""
    return json.loads(FIELDS_FILE.read_text())["fields"]


_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
    "any": lambda v: True,
}


def check_dpo(values: dict[str, Any]) -> dict[str, Any]:
    """Validate `dpo:` keys and value types against DPOConfig's fields; returns the values, numbers coerced."""
    fields = dpo_fields()
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in REFUSED:
            raise ValueError(f"'{key}' is set by the factory: {REFUSED[key]}")
        if key not in fields:
            raise ValueError(f"unknown DPOConfig key '{key}'{did_you_mean(key, fields)}")
        kinds = fields[key].split("|")
        if isinstance(value, str) and "float" in kinds and "str" not in kinds:
            try:  # YAML 1.1 reads 2e-5 (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        ok = any(_CHECKS[k](value) for k in kinds) or (key in SINGLE_AS_LIST and isinstance(value, str))
        if not ok:
            raise ValueError(f"'{key}' expects {' or '.join(kinds)}, got {value!r}")
        out[key] = value
    return out


class LoraOptions(OptionsBase):
    r: int = Field(8, ge=1, le=4096, description="adapter rank: more capacity and memory (the study used 32)")
    alpha: float = Field(16, gt=0, description="updates are scaled by alpha / r (the study used 64)")
    dropout: float = Field(
        0.05, ge=0, lt=1, description="adapter input dropout; TRL zeroes every dropout unless dpo.disable_dropout=false"
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description="module names to adapt, or all-linear (the study: q,k,v,o,gate,up,down_proj)",
    )

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("name at least one module (or all-linear)")
        if isinstance(value, list) and "lm_head" in value:
            raise ValueError("TRL computes log-probs from lm_head.weight directly, so an lm_head adapter never trains")
        return value


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
    from factory.training.dpo import train

    return train(options, inputs, ctx)


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts: Path) -> dict:
    adapter = Path(ctx.workdir or "") / "adapter"
    if not (adapter / "metrics.json").is_file():
        raise StageError(f"stages.{ctx.stage}: the trained adapter is missing from {adapter}; rebuild with --force")
    shutil.copytree(adapter, artifacts / "adapter", dirs_exist_ok=True)
    return json.loads((adapter / "metrics.json").read_text())["summary"]
