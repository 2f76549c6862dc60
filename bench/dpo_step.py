"""DPO step time and tokens/s through `train_dpo`, cold and with cached reference log-probs, against plain TRL.

    .venv/bin/python bench/dpo_step.py [--embedded] [--pairs 64] [--steps 8] [--batch 4]

Four runs on the same pairs, model, LoRA and DPO hyperparameters (CPU unless a GPU is present):
1. `factory build`, first run: the reference log-prob pass runs and fills `<runs>/<recipe>/.cache/ref_logps/`;
2. `factory build` with another beta (a new fingerprint): the reference log-probs come from the cache;
3. a plain TRL script, `DPOTrainer(precompute_ref_log_probs=True)`: the reference pass runs every time;
4. a plain TRL script with TRL's default (no precompute): a reference forward (adapter off) in every step.
The model is the tiny test Llama (random weights: only the timing matters) or, with --embedded, SmolLM2-135M.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from pydantic import Field

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent), str(ROOT / "tests")]

from tables import print_table  # noqa: E402

from factory.options import StageOptions  # noqa: E402  (needs the sys.path line above)
from factory.stage import Columns  # noqa: E402

SYSTEM = "You are simulating a personality-rich human response. Respond thoughtfully to the following question."
TOPICS = ["money", "criticism", "risk", "trust", "conflict", "empathy", "meaning", "support"]


class PairOptions(StageOptions):
    n: int = Field(64, ge=1)


def _pairs_run(options, inputs, ctx):
    rows = []
    for i in range(options.n):
        topic = TOPICS[i % len(TOPICS)]
        long = " ".join(f"When it comes to {topic}, I try to stay open and kind; it matters to me." for _ in range(3))
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"What is your attitude towards {topic}? Question {i}."},
                ],
                "chosen": [{"role": "assistant", "content": long}],
                "rejected": [{"role": "assistant", "content": f"I do not care about {topic}."}],
                "split": "test" if i % 8 == 7 else "train",
            }
        )
    return rows


pairs = SimpleNamespace(
    __doc__="Synthetic pairs for benchmarks.",
    VERSION=1,
    INPUTS={},  # a source stage
    OUTPUTS={"data": Columns({"prompt": "any", "chosen": "any", "rejected": "any", "split": "string"})},
    Options=PairOptions,
    run=_pairs_run,
)


def _recipe(model: str, args) -> str:
    return f"""\
name: bench_dpo
seed: 0
stages:
  pairs: {{uses: "dpo_step:pairs", n: {args.pairs}}}
  adapter:
    uses: train_dpo
    inputs: [pairs]
    model: "{model}"
    gradient_checkpointing: false
    save_steps: 100000
    dpo: {{beta: 0.1, max_steps: {args.steps}, per_device_train_batch_size: {args.batch}, learning_rate: 1.0e-4,
          max_length: 512}}
"""


def factory_run(recipe: Path, runs: Path, overrides: list[str]) -> dict:
    from factory.recipe import load_recipe
    from factory.runner import Runner

    runner = Runner(load_recipe(recipe, overrides), runs_dir=runs, progress=False)
    summary = runner.build()[-1]
    m = runner.store("adapter").manifest()["metrics"]
    return {
        "ref": m["ref_logps_seconds"],
        "steps": int(m["steps"]),
        "train": m["train_seconds"],
        "tokens": m["train_tokens"],
        "total": summary.seconds,
    }


def plain_trl_run(model_path: str, args, precompute: bool, out: Path) -> dict:
    """What a user would write without the factory: DPOTrainer directly, same data and hyperparameters."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    start = time.perf_counter()
    rows = _pairs_run(PairOptions(n=args.pairs), {}, None)
    keep = ("prompt", "chosen", "rejected")
    train = Dataset.from_list([{k: r[k] for k in keep} for r in rows if r["split"] == "train"])
    test = Dataset.from_list([{k: r[k] for k in keep} for r in rows if r["split"] == "test"])
    gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if gpu else torch.float32)
    config = DPOConfig(
        output_dir=str(out),
        beta=0.1,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=1e-4,
        max_length=512,
        logging_steps=1,
        seed=0,
        bf16=gpu,
        use_cpu=not gpu,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        precompute_ref_log_probs=precompute,
        precompute_ref_batch_size=8,
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    t = time.perf_counter()
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=train,
        eval_dataset=test,
        processing_class=AutoTokenizer.from_pretrained(model_path),
        peft_config=lora,
    )
    setup = time.perf_counter() - t
    trainer.remove_callback(PrinterCallback)  # with tqdm off it prints every log line
    t = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t
    trainer.evaluate()
    tokens = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e and "loss" in e][-1]
    return {
        "ref": setup if precompute else None,  # tokenizing is included: a few ms here
        "steps": trainer.state.global_step,
        "train": train_seconds,
        "tokens": tokens,
        "total": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedded", action="store_true", help="SmolLM2-135M-Instruct instead of the tiny model")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    import datasets

    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference pass draws a bar in the plain runs
    import peft  # noqa: F401  (imported up front, so no run pays for the imports)
    import trl  # noqa: F401
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp(prefix="factory-bench-dpo-"))
    try:
        if args.embedded:
            from factory.llm.models import embedded_model_path

            model, label = str(embedded_model_path()), "SmolLM2-135M-Instruct (embedded)"
        else:
            from tiny_model import build_tiny_model

            model, label = str(build_tiny_model(tmp / "tiny", train_steps=0)), "tiny 2-layer Llama"
        recipe = tmp / "recipe.yaml"
        recipe.write_text(_recipe(model, args))
        results = [
            ("factory, first run", "computed, cached", factory_run(recipe, tmp / "runs", [])),
            (
                "factory, beta changed",
                "from the cache",
                factory_run(recipe, tmp / "runs", ["stages.adapter.dpo.beta=0.2"]),
            ),
            ("plain TRL, precompute", "computed", plain_trl_run(model, args, True, tmp / "plain1")),
            ("plain TRL, default", "every step", plain_trl_run(model, args, False, tmp / "plain2")),
        ]
        rows = []
        for name, ref_kind, r in results:
            rows.append(
                [
                    name,
                    ref_kind,
                    "-" if r["ref"] is None else f"{r['ref']:.2f}",
                    str(r["steps"]),
                    f"{r['train'] / r['steps']:.3f}",
                    f"{r['tokens'] / r['train']:,.0f}",
                    f"{r['total']:.2f}",
                ]
            )
        print_table(
            f"DPO on {label}: {args.pairs} pairs (1/8 eval), {args.steps} steps x batch {args.batch}, LoRA r=8 q,v",
            ["run", "reference log-probs", "ref pass s", "steps", "s/step", "train tokens/s", "total s"],
            rows,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
