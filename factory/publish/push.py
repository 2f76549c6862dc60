"""Publish a recipe's built stages: `factory push RECIPE`, and the end of `factory build` under a `publish:` block.

    publish:
      profile: local          # a profile under push/ (local, hub) or a path to a profile YAML
      layout: per_recipe      # one dataset repo with a config per stage; per_stage: one repo per stage
      stages: [people, votes] # default: every stage
      repo: my-name           # default: the recipe's name (per_stage: <repo>-<stage>)

Dataset repos are published first, in recipe order, so a card can name the repo and version its upstream
stages went to; adapter stages then get model repos that name the dataset repo and version they were trained on.
A stage must be built and current (not stale) to be published. `dry_run` builds every file set and card in a
temporary folder and reports the version each repo would get, writing nothing.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from factory.errors import FactoryError, RecipeError, did_you_mean
from factory.profiles import load_profile
from factory.publish.destinations import PublishResult, make_target, prepare
from factory.publish.layout import Built, Context, dataset_files, model_files, plan_repos
from factory.publish.versions import next_version

log = logging.getLogger(__name__)


@dataclass
class PushSettings:
    profile: str = "local"
    layout: str = "per_recipe"
    stages: list[str] | None = None
    repo: str | None = None


def publish_recipe(
    recipe, runs_dir: str | Path = "runs", profile: str | None = None, dry_run: bool = False
) -> list[PublishResult]:
    """Publish the recipe's built stages; returns one result per repo (`changed` False: nothing written)."""
    from factory.runner import Runner

    runs_dir = Path(runs_dir)
    cfg = recipe.publish
    settings = PushSettings(**cfg.model_dump()) if cfg is not None else PushSettings()
    prof = load_profile(profile or settings.profile, recipe.path.resolve().parent)
    target = make_target(prof, runs_dir, recipe.name)
    stages = settings.stages or list(recipe.order)
    for s in stages:
        if s not in recipe.stages:
            raise RecipeError("publish.stages", f"unknown stage '{s}'{did_you_mean(s, recipe.stages)}")
    runner = Runner(recipe, runs_dir=runs_dir, progress=False)
    built: dict[str, Built] = {}
    for s in recipe.order:
        status = runner.status(s)
        if status.state == "cached":
            built[s] = Built(s, runner.store(s).view())
        elif s in stages:
            why = "is not built" if status.state in ("missing", "partial") else f"is {status.state} ({status.detail})"
            raise FactoryError(f"publish: stage '{s}' {why}; run `factory build {recipe.path}` first")
    plans = plan_repos(recipe, built, stages, settings.layout, settings.repo)
    ctx = Context(recipe, prof, target, built, {})
    results: list[PublishResult] = []
    message = f"{recipe.name} {recipe.version}: {', '.join(stages)}"
    with tempfile.TemporaryDirectory(prefix="factory-push-") as tmp:
        for plan in plans:
            repo_id = target.repo_id(plan.name)
            staging = Path(tmp) / f"{plan.kind}s" / plan.name
            if plan.kind == "dataset":
                files = dataset_files(plan, ctx, staging)
            else:
                files = model_files(plan, ctx, staging)
            if dry_run:
                result = _would(target, plan.kind, repo_id, files)
            else:
                result = target.publish(plan.kind, repo_id, files, message)
            results.append(result)
            if plan.kind == "dataset":
                for s in plan.stages:
                    ctx.published[s] = (repo_id, result.version)
    return results


def _would(target, kind, repo_id: str, files) -> PublishResult:
    _, digest = prepare(files)
    latest = target.latest(kind, repo_id)
    if latest is not None and latest.content_hash == digest:
        return PublishResult(kind, repo_id, latest.version, False, target.location(kind, repo_id), files=len(files))
    version = next_version([latest.version] if latest else [])
    return PublishResult(kind, repo_id, version, True, target.location(kind, repo_id), files=len(files))


def describe(results: list[PublishResult], dry_run: bool = False) -> list[str]:
    """One line per repo for the CLI."""
    lines = []
    for r in results:
        if dry_run:
            what = f"would publish {r.version}" if r.changed else f"unchanged ({r.version})"
        else:
            what = f"published {r.version}" if r.changed else f"unchanged ({r.version}, nothing written)"
        lines.append(f"{r.kind} {r.repo_id}: {what} -> {r.location}")
    return lines
