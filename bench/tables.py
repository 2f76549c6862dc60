"""Helpers shared by the scripts in bench/: the model to run, a recipe around it, and printing tables."""

from __future__ import annotations

from pathlib import Path


def bench_model(tmp: Path, tiny: bool) -> str:
    """The model a benchmark runs: the embedded SmolLM2-135M, or with `tiny` a tiny model built in `tmp` (a quick
    smoke run)."""
    if tiny:
        from tiny_model import build_tiny_model

        return str(build_tiny_model(tmp / "tiny"))
    from factory.llm.models import embedded_model_path

    return str(embedded_model_path())


def model_recipe(tmp: Path, tiny: bool, batch_size: int, stages: str) -> Path:
    """A recipe in `tmp` whose backend `m` serves the benchmark's model (`bench_model`) with `batch_size`, and
    whose `stages:` block is `stages` (YAML lines indented by two spaces)."""
    recipe = tmp / "r.yaml"
    recipe.write_text(
        f"""name: bench
seed: 0
backends:
  m: {{type: transformers, model: "{bench_model(tmp, tiny)}", batch_size: {batch_size}}}
stages:
{stages}"""
    )
    return recipe


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths))))
