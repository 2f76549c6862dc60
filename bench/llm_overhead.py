"""LLM stage overhead: the `personas` stage against a bare backend loop over the same prompts and batch size.

    .venv/bin/python bench/llm_overhead.py [--persons 16] [--style descriptive] [--max-tokens 64] [--tiny]

Both sides use the same transformers backend and batch size; the factory side adds prompt rendering, the request
cache, validation, checkpointing, drift measures and the manifest. Prints wall time, tokens/s and the overhead.
With --tiny a tiny random model stands in for the embedded SmolLM2 (a quick smoke run).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=16)
    parser.add_argument("--style", default="descriptive")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()

    import datasets
    from datasets import ClassLabel
    from tables import model_recipe, print_table

    from factory.llm import backend as backend_mod
    from factory.llm.types import GenerationRequest, Sampling
    from factory.personas import styles
    from factory.prompts import builtin, render
    from factory.recipe import load_recipe
    from factory.runner import Runner
    from factory.seeds import derive_seed

    datasets.disable_progress_bars()
    tmp = Path(tempfile.mkdtemp(prefix="factory-llm-bench-"))
    try:
        recipe = model_recipe(
            tmp,
            args.tiny,
            args.batch_size,
            f"""\
  people: {{uses: meta_personas, geographies: [OH], n_per_geography: {args.persons}, bigfive: {{mode: none}}}}
  personas:
    uses: personas
    inputs: [people]
    backend: m
    styles: [{args.style}]
    batch_size: {args.persons}
    max_tokens: {args.max_tokens}
    max_retries: 0
""",
        )
        runner = Runner(load_recipe(recipe), runs_dir=tmp / "runs", progress=False)
        runner.build(only=["people"])
        meta = datasets.load_from_disk(str(runner.store("people").data_dir))
        names = {c: f.names for c, f in meta.features.items() if isinstance(f, ClassLabel)}
        system = render(builtin("personas/system.jinja"))
        seed = runner.recipe.stage_seed("personas")
        requests = [
            GenerationRequest.chat(
                [
                    {"role": "system", "content": system},
                    {
                        "role": "user",
                        "content": render(
                            builtin(f"personas/{args.style}.jinja"), facts=styles.facts(p, names), max_words=120
                        ),
                    },
                ],
                Sampling(0.8, 0.9, args.max_tokens, (), derive_seed(seed, p["person_id"], args.style) % 2**31),
            )
            for p in meta.to_list()
        ]

        # the stage and the bare loop share one loaded model (load time is left out of both)
        bare = backend_mod.load(runner.recipe.backends["m"], None).backend
        bare.generate(requests[:1])  # warm up
        start = time.perf_counter()
        results = bare.generate(requests)
        t_bare = time.perf_counter() - start
        tokens = sum(r.completion_tokens for r in results)

        start = time.perf_counter()
        runner.build(only=["personas"])
        t_stage = time.perf_counter() - start
        manifest = runner.store("personas").manifest()
        stage_tokens = sum(v for k, v in manifest["metrics"].items() if k.startswith("tokens_out."))

        rows = [
            ["bare backend loop", f"{t_bare:.2f}", f"{tokens:,}", f"{tokens / t_bare:,.1f}"],
            [
                "personas stage (fresh cache)",
                f"{t_stage:.2f}",
                f"{int(stage_tokens):,}",
                f"{stage_tokens / t_stage:,.1f}",
            ],
            ["overhead", f"{(t_stage / t_bare - 1) * 100:+.1f}%", "", ""],
        ]
        model_name = "tiny" if args.tiny else "embedded SmolLM2-135M"
        print_table(
            f"{args.persons} persons, style {args.style}, max_tokens {args.max_tokens}, batch {args.batch_size}, "
            f"model {model_name}",
            ["run", "seconds", "tokens out", "tokens/s"],
            rows,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
