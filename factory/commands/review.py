"""`factory review export|import RECIPE`: a recipe's review stage, the pairs it reads, and its Argilla dataset.

Export needs the pairs built (and current); import writes the decisions file and then builds the review stage
alone (its input must be built, as with `factory build --only`). Both connect with `ARGILLA_API_URL` and
`ARGILLA_API_KEY` from the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory.errors import FactoryError, RecipeError, did_you_mean
from factory.review.client import Exported


@dataclass
class Imported:
    path: Path  # the decisions file
    responses: int
    stage: str
    fingerprint: str
    status: str  # built | cached
    dir: Path
    summary: dict[str, Any]


def review_stage(recipe: Any, stage: str | None) -> str:
    """The named review stage, or the recipe's only one."""
    reviews = [n for n, e in recipe.stages.items() if e.uses == "review"]
    if stage is not None:
        if stage not in recipe.stages:
            raise RecipeError("", f"--stage {stage}: no such stage{did_you_mean(stage, recipe.stages)}")
        if recipe.stages[stage].uses != "review":
            raise RecipeError(f"stages.{stage}", f"--stage {stage}: uses '{recipe.stages[stage].uses}', not 'review'")
        return stage
    if not reviews:
        example = "reviewed: {uses: review, inputs: [pairs]}"
        raise RecipeError("stages", f"{recipe.path}: no stage uses 'review'; add one, e.g. {example}")
    if len(reviews) > 1:
        raise RecipeError("stages", f"several review stages ({', '.join(reviews)}); name one with --stage")
    return reviews[0]


def _pairs(runner: Any, stage: str) -> Any:
    from datasets import disable_progress_bars, load_from_disk

    disable_progress_bars()
    recipe = runner.recipe
    entry = recipe.stages[stage]
    (name,) = entry.inputs
    if name in entry.hub:
        return load_from_disk(str(runner._hub_data(entry.hub[name])))
    status = runner.status(name)
    if status.state != "cached":
        why = "is not built" if status.state in ("missing", "partial") else f"is {status.state} ({status.detail})"
        raise FactoryError(
            f"review: the pairs stage '{name}' {why}; run `factory build {recipe.path} --only {name}` first"
        )
    return load_from_disk(str(runner.store(name).data_dir))


def export_recipe(recipe: Any, runs_dir: str | Path = "runs", stage: str | None = None) -> Exported:
    """Log the review stage's input pairs to its Argilla dataset (created on first use)."""
    from factory.prompts import builtin, render
    from factory.review import client
    from factory.review.records import record
    from factory.runner import Runner

    stage = review_stage(recipe, stage)
    options = recipe.stages[stage].options
    runner = Runner(recipe, runs_dir=runs_dir, progress=False)
    pairs = _pairs(runner, stage)
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in pairs.column_names]
    if missing:
        raise FactoryError(f"stages.{stage}.inputs: the pairs lack {', '.join(missing)} (prompt, chosen, rejected)")
    seed = recipe.stage_seed(stage)
    rows: dict[str, dict] = {}
    for row in pairs:
        r = record(row, seed)
        rows.setdefault(r["id"], r)  # identical pairs are one record; the stage applies its votes to each copy
    guidelines = render(
        builtin("review/guidelines.jinja"), recipe=recipe.name, stage=stage, min_submitted=options.min_submitted
    )
    conn = client.connect(options.timeout, options.retries)
    return client.export(conn, options.dataset, options.workspace, list(rows.values()), options.min_submitted,
                         guidelines)  # fmt: skip


def import_recipe(recipe: Any, runs_dir: str | Path = "runs", stage: str | None = None) -> Imported:
    """Write every submitted response to the decisions file, then build the review stage from it."""
    from factory.review import client
    from factory.review.records import write_decisions
    from factory.runner import Runner

    stage = review_stage(recipe, stage)
    options = recipe.stages[stage].options
    if options.responses is None:
        raise RecipeError(f"stages.{stage}.responses", "no decisions file named")
    _pairs(Runner(recipe, runs_dir=runs_dir, progress=False), stage)  # fail before any network if not built
    conn = client.connect(options.timeout, options.retries)
    decisions = client.fetch(conn, options.dataset, options.workspace, recipe.stage_seed(stage))
    path = options.responses.resolved
    n = write_decisions(path, decisions)
    runner = Runner(recipe, runs_dir=runs_dir, progress=False)  # fingerprints now hash the new decisions
    (summary,) = runner.build(only=[stage])
    store = runner.store(stage)
    return Imported(path, n, stage, store.fingerprint, summary.status, store.dir, store.manifest()["summary"])


def describe_export(e: Exported) -> list[str]:
    verb = "created" if e.created else "updated"
    return [
        f"review: {e.records} pair(s) logged to Argilla dataset '{e.dataset}' in workspace '{e.workspace}' ({verb})",
        f"review: {e.url}",
    ]


def describe_import(i: Imported, shown_path: str | Path) -> list[str]:
    s = i.summary
    lines = [
        f"review: {i.responses} submitted response(s) -> {shown_path}",
        f"{i.stage}: {s['reviewed']} of {s['pairs']} pair(s) reviewed: {s['agreed']} agreed with the judge, "
        f"{s['swapped']} swapped, {s['ties_dropped']} tie(s) dropped; {s['unreviewed']} unreviewed"
        f"{' (left out)' if s['unreviewed_dropped'] else ''}",
    ]
    if s["pending"]:
        lines[-1] += f", {s['pending']} of them with fewer than {s['min_submitted']} votes so far"
    if s["reviewers"]:
        counts = ", ".join(f"{name} {r['responses']}" for name, r in s["reviewers"].items())
        lines.append(f"{i.stage}: responses per reviewer: {counts}")
    if s.get("stale_responses"):
        lines.append(f"{i.stage}: {s['stale_responses']} response(s) to pairs no longer in the input were ignored")
    lines.append(f"{i.stage}: {i.status} {i.fingerprint} -> {i.dir}")
    return lines
