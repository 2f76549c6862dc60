"""One script for a GPU machine: the transformers backend's generation tokens/s and `score_choices` throughput in
bfloat16 on a model with Llama-3.1-8B's shape and random weights (fixed output lengths: end-of-sequence is
disabled), and one DPO step with LoRA through `train_dpo`.

    .venv/bin/python bench/gpu_check.py            # on a CUDA machine (about 16 GB of weights written to --tmp)
    .venv/bin/python bench/gpu_check.py --tiny     # the same code paths on CPU with a 2-layer model (a smoke run)

The tokenizer is the tiny test model's (byte-level BPE with a chat template): only shapes and lengths matter.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent), str(ROOT / "tests")]

from dpo_step import factory_run  # noqa: E402
from tables import print_table  # noqa: E402
from test_train_dpo import recipe_text  # noqa: E402  (the training tests' recipe: fake pairs, train_dpo)

LLAMA_31_8B = dict(  # meta-llama/Llama-3.1-8B-Instruct's config.json
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    max_position_embeddings=131072,
    rope_theta=500000.0,
    rope_scaling={
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def build_model(folder: Path, tiny: bool) -> Path:
    """Random weights in `folder` (bfloat16 on CUDA), with the tiny test tokenizer and chat template."""
    import torch
    from tiny_model import build_tiny_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(folder / "tokenizer", train_steps=0))
    shape = TINY if tiny else LLAMA_31_8B
    config = LlamaConfig(
        **{"vocab_size": len(tokenizer), "max_position_embeddings": 4096, **shape},
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16 if device == "cuda" else torch.float32)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    target = folder / "model"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return target


def generation(backend, n: int, tokens: int) -> list[str]:
    from factory.llm.types import GenerationRequest, Sampling

    requests = [
        GenerationRequest.chat([{"role": "user", "content": f"About person {i}."}], Sampling(max_tokens=tokens, seed=i))
        for i in range(n)
    ]
    backend.eos_ids = set()  # random weights: every answer runs to max_tokens, so lengths are fixed
    started = time.perf_counter()
    results = backend.generate(requests)
    seconds = time.perf_counter() - started
    produced = sum(r.completion_tokens for r in results)
    assert produced == n * tokens, f"{produced} tokens, expected {n * tokens}"
    return ["generate", f"{n} x {tokens} tokens", f"{seconds:.1f}", f"{produced / seconds:.0f} tokens/s"]


def scoring(backend, n: int) -> list[str]:
    from factory.llm.types import ScoreRequest

    options = [f"Answer: {c}" for c in "ABCDE"]
    persona = "I am a 41-year-old nurse from Ohio; I vote in every election and read the news daily. " * 8
    messages = [[{"role": "system", "content": persona}, {"role": "user", "content": f"Q {i}?"}] for i in range(n)]
    requests = [ScoreRequest.chat(m, options) for m in messages]
    started = time.perf_counter()
    results = backend.score_choices(requests)
    seconds = time.perf_counter() - started
    assert all(r.error is None and len(r.logprobs) == 5 for r in results)
    return ["score_choices", f"{n} questions x 5 options", f"{seconds:.1f}", f"{n / seconds:.1f} questions/s"]


def dpo_step(model: Path, tmp: Path) -> list[str]:
    recipe = tmp / "dpo.yaml"
    dpo = "dpo: {beta: 0.1, max_steps: 1, per_device_train_batch_size: 4, learning_rate: 1.0e-4, max_length: 512}"
    recipe.write_text(recipe_text(str(model), dpo))
    run = factory_run(recipe, tmp / "runs", [])
    speed = f"{run['tokens'] / run['train']:.0f} tokens/s"
    return ["train_dpo (LoRA)", "1 step x 4 pairs", f"{run['train']:.1f}", speed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model: checks the script on CPU")
    parser.add_argument("--requests", type=int, default=64, help="generation requests")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per request")
    parser.add_argument("--questions", type=int, default=64, help="score_choices requests")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tmp", default=None, help="where the random model is written (default: a temp folder)")
    args = parser.parse_args()
    if args.tiny:
        args.requests, args.tokens, args.questions, args.batch_size = 4, 8, 4, 4

    import torch

    from factory.llm.transformers_backend import TransformersBackend

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        model = build_model(Path(tmp), args.tiny)
        backend = TransformersBackend(str(model), dtype="auto", batch_size=args.batch_size)
        dtype = str(next(backend.model.parameters()).dtype).removeprefix("torch.")
        rows = [generation(backend, args.requests, args.tokens), scoring(backend, args.questions)]
        backend.close()
        rows.append(dpo_step(model, Path(tmp)))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    shape = "tiny 2-layer Llama" if args.tiny else "Llama-3.1-8B shape, random weights"
    print_table(f"gpu_check on {device}: {shape}, {dtype}", ["what", "work", "seconds", "throughput"], rows)


if __name__ == "__main__":
    main()
