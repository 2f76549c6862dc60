"""The slot decoder against static batches: the `personas` stage of the quickstart, three ways, side by side.

    .venv/bin/python bench/decode.py [--persons 8] [--batch-size 16] [--tiny]

"static" is the decoder the transformers backend had before continuous batching: left-padded batches of
`batch_size` that run until their longest answer ends, a `DynamicCache`, transformers' own sdpa attention, one
token per step (text a grammar forces too), and retries and reflective turns in rounds after each call.
"continuous" is the slot decoder (`factory.llm.decode`): packed passes, forced text fed at once, shared prefixes
copied. "no jump-forward" is the slot decoder sampling every token (`jump_forward: false`), which changes the tokens
JSON answers are split into, so its rows differ; static and continuous write the same rows (checked).
Prints wall time, tokens in and out, tokens/s and the speed-up over static.
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
    parser.add_argument("--persons", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()

    import datasets
    from tables import model_recipe, print_table

    from factory.llm import backend as backend_mod
    from factory.recipe import load_recipe
    from factory.runner import Runner

    datasets.disable_progress_bars()
    tmp = Path(tempfile.mkdtemp(prefix="factory-decode-bench-"))
    try:
        recipe = model_recipe(
            tmp,
            args.tiny,
            args.batch_size,
            f"""\
  people: {{uses: meta_personas, geographies: [NY, WY, DC], n_per_geography: 2000}}
  personas:
    uses: personas
    inputs: [people]
    backend: m
    styles: [objective_table, subjective_table, descriptive, reflective]
    sample: {args.persons}
    max_tokens: 300
    descriptive_words: 60
    reflection_turns: 1
""",
        )
        rows, tables = [], []
        for mode in ("static", "no jump-forward", "continuous"):
            runner = Runner(load_recipe(recipe), runs_dir=tmp / mode, progress=False)
            runner.build(only=["people"])
            backend = backend_mod.load(runner.recipe.backends["m"], None).backend
            backend.jump_forward = mode != "no jump-forward"
            if mode == "static":
                backend.slots = False
                backend.model.set_attn_implementation("sdpa")
            else:
                backend.slots = True
                backend.model.set_attn_implementation("factory_sdpa")
            start = time.perf_counter()
            runner.build(only=["personas"])
            seconds = time.perf_counter() - start
            store = runner.store("personas")
            metrics = store.manifest()["metrics"]
            tokens_in = sum(v for k, v in metrics.items() if k.startswith("tokens_in."))
            tokens_out = sum(v for k, v in metrics.items() if k.startswith("tokens_out."))
            tables.append(datasets.load_from_disk(str(store.data_dir)).to_pandas())
            rows.append(
                [mode, f"{seconds:.1f}", f"{int(tokens_in):,}", f"{int(tokens_out):,}", f"{tokens_out / seconds:.1f}"]
            )
        same = tables[0].equals(tables[2])
        for row in rows[1:]:
            row.append(f"{float(rows[0][1]) / float(row[1]):.2f}x")
        rows[0].append("")
        rows.append(["static = continuous", "", "", "", "", f"same rows: {same}"])
        print_table(
            f"personas stage, {args.persons} persons x 4 styles, batch {args.batch_size}, "
            f"model {'tiny' if args.tiny else 'embedded SmolLM2-135M'}",
            ["decoder", "seconds", "tokens in", "tokens out", "tokens out/s", "speed-up"],
            rows,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
