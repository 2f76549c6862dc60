"""CLI: fast validate without heavy imports, ls, plan; the package is self-contained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import factory_subprocess

ROOT = Path(__file__).resolve().parents[1]


def test_validate_imports_nothing_heavy():
    """What keeps `validate` instant (0.25 s on an idle 2-core machine; timed in no test, a loaded CI box varies)."""
    code = (
        "import sys, time; t = time.perf_counter();"
        "from click.testing import CliRunner; from factory.cli import main;"
        f"r = CliRunner().invoke(main, ['validate', *{[str(p) for p in sorted((ROOT / 'recipes').glob('*.yaml'))]!r}]);"
        "assert r.exit_code == 0, r.output;"
        "heavy = [m for m in ('datasets', 'torch', 'transformers', 'pyarrow', 'pandas', 'vllm', 'ray', 'argilla')"
        " if m in sys.modules];"
        "print(repr(heavy), time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]", f"validate imported {out[0]}"


def test_validate_every_recipe_from_the_command_line():
    result = factory_subprocess("validate", *sorted((ROOT / "recipes").glob("*.yaml")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == len(list((ROOT / "recipes").glob("*.yaml")))


def test_ls_lists_stages_backends_and_sets(cli):
    result = cli("ls")
    assert result.exit_code == 0
    for word in ("questions", "transformers", "vllm", "openai", "opinionqa", "personality"):
        assert word in result.stdout


def test_plan_shows_fingerprints(cli, tmp_path):
    result = cli("plan", ROOT / "recipes" / "quickstart.yaml", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0
    assert "missing" in result.stdout and "questions" in result.stdout


def test_help_and_version(cli):
    assert cli("--help").exit_code == 0
    from factory import __version__

    result = cli("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_package_never_reads_shared_data():
    for path in (ROOT / "factory").rglob("*.py"):
        assert "shared/" not in path.read_text(), path


def test_vendored_data_is_packaged():
    from factory.resources import data_path

    for parts in [
        ("census", "states.csv"),
        ("census", "acs2018_1yr_state", "acs2018_1yr_state_S0101.csv.gz"),
        ("census", "acs2023_1yr_state_subset.parquet"),
        ("elections", "us_president_by_state_2016_2020_2024.csv"),
        ("opinionqa", "group_counts.parquet"),
        ("bigfive", "big_five_conditional_mvn.json"),
        ("questions", "seed_topics", "Opinion_QA.json"),
        ("README.md",),
    ]:
        assert data_path(*parts).is_file(), parts
