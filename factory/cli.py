"""`factory` command line. It only dispatches: heavy libraries load inside the command that needs them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from factory.errors import FactoryError

RUNS_DIR = click.option(
    "--runs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs"),
    envvar="FACTORY_RUNS_DIR",
    show_default=True,
    help="where stage outputs are stored",
)


def _fail(exc: FactoryError) -> None:
    click.echo(f"error: {_one_line(exc)}", err=True)
    sys.exit(exc.exit_code)


def _one_line(exc: BaseException) -> str:
    return str(exc).replace("\r", "\\r").replace("\n", "\\n")


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FactoryError as exc:
            _fail(exc)
        except OSError as exc:  # a read-only or full disk, a path that is a file: the path, not a traceback
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or _one_line(exc)}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted: finished batches are kept; rerun the same command to resume", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="persona-factory")
@click.option("-v", "--verbose", count=True, help="more logging (-vv for debug)")
def main(verbose: int) -> None:
    """Census-faithful synthetic people, personas, answers and preference data as Hugging Face datasets."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _check_writable(runs_dir: Path) -> None:
    """Fail in one line, before any work, when the runs folder cannot be written."""
    import tempfile

    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=runs_dir):
            pass
    except OSError as exc:
        raise FactoryError(f"runs folder {runs_dir}: cannot write there ({exc.strerror or exc})") from None


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--only", multiple=True, help="build only this stage (repeatable); its inputs must be built")
@click.option("--from", "from_", help="rebuild this stage and everything downstream of it")
@click.option("--force", multiple=True, help="rebuild this stage even if cached (repeatable)")
@click.option("--dry-run", is_flag=True, help="show what would be built, build nothing")
@click.option("--no-progress", is_flag=True, help="no progress bars")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    help="where batches run (default: the recipe's executor block, else local); never changes outputs",
)
@click.option("--address", help="Ray cluster: auto, ray://host:10001 or host:6379 (implies --executor ray)")
@RUNS_DIR
def build(
    recipe: Path,
    overrides: tuple[str, ...],
    only: tuple[str, ...],
    from_: str | None,
    force: tuple[str, ...],
    dry_run: bool,
    no_progress: bool,
    executor: str | None,
    address: str | None,
    runs_dir: Path,
) -> None:
    """Build RECIPE's stages; OVERRIDES are key=value pairs (stages.questions.sample=20)."""
    from factory.progress import out, summary_table
    from factory.recipe import load_recipe
    from factory.runner import Runner, executor_for

    r = load_recipe(recipe, overrides)
    if address and executor == "local":
        raise FactoryError("--address names a Ray cluster: use it with --executor ray")
    if not dry_run:
        _check_writable(runs_dir)
    chosen = executor_for(r, executor, address) if executor or address else None
    runner = Runner(r, runs_dir=runs_dir, progress=not no_progress, executor=chosen)
    try:
        summaries = runner.build(only=list(only) or None, from_=from_, force=list(force) or None, dry_run=dry_run)
    finally:
        if chosen is not None and hasattr(chosen, "close"):
            chosen.close()
    if dry_run:
        for s in summaries:
            out.print(f"{s.stage:<24} {s.fingerprint}  {s.status}")
        return
    out.print(summary_table(summaries))
    out.print(f"outputs: {runs_dir / r.name}")
    if r.publish is not None:
        if only:
            out.print(f"publish: skipped with --only (run `factory push {recipe}` when the stages are built)")
            return
        from factory.publish.push import describe, publish_recipe

        for line in describe(publish_recipe(r, runs_dir)):
            out.print(line)


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--profile", help="publish profile: local, hub, or a profile YAML (default: the recipe's publish block)")
@click.option("--dry-run", is_flag=True, help="build the repos' files and cards, report versions, write nothing")
@RUNS_DIR
def push(recipe: Path, overrides: tuple[str, ...], profile: str | None, dry_run: bool, runs_dir: Path) -> None:
    """Publish RECIPE's built stages as versioned dataset (and adapter model) repos, one commit and tag each."""
    from factory.progress import out
    from factory.publish.push import describe, publish_recipe
    from factory.recipe import load_recipe

    r = load_recipe(recipe, overrides)
    if not dry_run:
        _check_writable(runs_dir)
    if profile and Path(profile).is_file():  # a profile file named on the command line is relative to here
        profile = str(Path(profile).resolve())
    for line in describe(publish_recipe(r, runs_dir, profile=profile, dry_run=dry_run), dry_run=dry_run):
        out.print(line)


@main.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(recipes: tuple[Path, ...]) -> None:
    """Check RECIPES without running anything (no network, no model loading)."""
    from factory.recipe import load_recipe

    failed = 0
    for path in recipes:
        try:
            r = load_recipe(path)
        except FactoryError as exc:
            click.echo(f"error: {_one_line(exc)}", err=True)
            failed = exc.exit_code
            continue
        click.echo(f"ok: {path} ({r.name}: {len(r.stages)} stage(s), {len(r.backends)} backend(s))")
    if failed:
        sys.exit(failed)


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
@RUNS_DIR
def plan(recipe: Path, overrides: tuple[str, ...], runs_dir: Path) -> None:
    """Show each stage's fingerprint and whether its output is cached, partial or missing."""
    from factory.progress import out, plan_table
    from factory.recipe import load_recipe
    from factory.runner import Runner

    r = load_recipe(recipe, overrides)
    runner = Runner(r, runs_dir=runs_dir, progress=False)
    from factory.hub_inputs import fingerprint

    rows = []
    for name, entry in r.stages.items():  # published datasets the recipe reads, pinned
        for url, ref in entry.hub.items():
            if not any(row[0] == url for row in rows):
                rows.append((url, "hub input", fingerprint(ref), "pinned", f"read by {name}"))
    rows += [(s.stage, r.stages[s.stage].uses, s.fingerprint, s.state, s.detail) for s in runner.plan()]
    out.print(plan_table(f"{r.name} (seed {r.seed}) -> {runs_dir / r.name}", rows))


@main.command(name="ls")
def ls() -> None:
    """List stages and backends with one-line descriptions."""
    from factory import registry

    click.echo("stages:")
    for name in registry.STAGES:
        click.echo(f"  {name:<16} {registry.stage(name).summary}")
    click.echo("backends:")
    for name in registry.BACKENDS:
        doc = (registry.backend(name).__doc__ or "").strip().splitlines()
        click.echo(f"  {name:<16} {doc[0] if doc else ''}")
    from factory.census.sources import ASSUMED_PAIRS, ASSUMED_WITHOUT_S0501, SOURCES
    from factory.questions.sets import SETS

    click.echo("census sources (stage 'meta_personas', option source):")
    for name, summary in SOURCES.items():
        click.echo(f"  {name:<16} {summary}")
    pairs = lambda ps: ", ".join(f"{a} x {b}" for a, b in ps)  # noqa: E731
    click.echo("  joints no census table constrains (assumptions; a build's card lists its own):")
    click.echo(f"    acs2018, every state: {pairs(ASSUMED_PAIRS)}")
    click.echo(f"    8 states without S0501 crosses, also: {pairs(ASSUMED_WITHOUT_S0501)}")
    click.echo("question sets (stage 'questions', option sets):")
    for name, summary in SETS.items():
        click.echo(f"  {name:<16} {summary}")


@main.group()
def review() -> None:
    """Human review of preference pairs in Argilla (needs the `review` extra, ARGILLA_API_URL and ARGILLA_API_KEY)."""


@review.command(name="export")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--stage", help="the review stage (default: the recipe's only stage that uses 'review')")
@RUNS_DIR
def review_export(recipe: Path, overrides: tuple[str, ...], stage: str | None, runs_dir: Path) -> None:
    """Log the review stage's (built) input pairs to its Argilla dataset; a re-export updates the same records."""
    from factory.commands.review import describe_export, export_recipe
    from factory.progress import out
    from factory.recipe import load_recipe

    for line in describe_export(export_recipe(load_recipe(recipe, overrides), runs_dir, stage)):
        out.print(line, soft_wrap=True)


@review.command(name="import")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--stage", help="the review stage (default: the recipe's only stage that uses 'review')")
@RUNS_DIR
def review_import(recipe: Path, overrides: tuple[str, ...], stage: str | None, runs_dir: Path) -> None:
    """Write the submitted Argilla responses to the decisions file and build the review stage from them."""
    from factory.commands.review import describe_import, import_recipe
    from factory.progress import out
    from factory.recipe import load_recipe

    result = import_recipe(load_recipe(recipe, overrides), runs_dir, stage)
    shown = result.path.relative_to(Path.cwd()) if result.path.is_relative_to(Path.cwd()) else result.path
    for line in describe_import(result, shown):
        out.print(line, soft_wrap=True)


@main.group()
def census() -> None:
    """Census data: fetch more ACS vintages."""


@census.command()
@click.option("--year", type=int, required=True, help="ACS 1-year vintage, e.g. 2019")
@click.option(
    "--table",
    "tables",
    multiple=True,
    help="table to fetch (repeatable); default: every table meta_personas reads, with B01001A-I and C15002A-I",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="folder to write")
@click.option("--base-url", default="https://api.census.gov/data", show_default=True, help="Census API root")
def fetch(year: int, tables: tuple[str, ...], out: Path, base_url: str) -> None:
    """Download ACS state tables (needs CENSUS_API_KEY and network) for `census_dir:` in a recipe."""
    from factory.census import acs2018
    from factory.census.fetch import fetch as do_fetch

    for path in do_fetch(year, list(tables) or [*acs2018.TABLES, *acs2018.DETAILED], out, base_url):
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
