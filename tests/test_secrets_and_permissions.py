"""Keys never reach an error message, whatever the failure (a base URL without a scheme, an error text that quotes
the request, a long error cut short), and a runs folder that cannot be written is one line naming it."""

from __future__ import annotations

import urllib.error

import pytest

KEY = "sekrit-0123456789abcdef"


@pytest.mark.parametrize(
    "base_url", ["api.census.gov/data", "ftp://example.org/data", "http://[::1", "https://x/d?a=1"]
)
def test_a_census_base_url_without_http_is_one_line_without_the_key(cli, tmp_path, monkeypatch, base_url):
    monkeypatch.setenv("CENSUS_API_KEY", KEY)
    result = cli(
        "census", "fetch", "--year", "2019", "--table", "S0101", "--out", tmp_path / "o", "--base-url", base_url
    )
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "is not an http(s) URL" in result.stderr
    assert KEY not in result.output + result.stderr


@pytest.mark.parametrize(
    "raised",
    [
        lambda url: ValueError(f"unknown url type: {url!r}"),
        lambda url: urllib.error.HTTPError(url, 400, f"bad request {url}", {}, None),
        lambda url: urllib.error.URLError(f"cannot reach {url}"),
        lambda url: RuntimeError(f"something odd about {url.replace('-', '%2D')}"),
    ],
)
def test_every_census_fetch_error_is_scrubbed_of_the_key(cli, tmp_path, monkeypatch, raised):
    import urllib.request

    def fail(url, timeout=None):
        raise raised(url)

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    monkeypatch.setenv("CENSUS_API_KEY", KEY)
    result = cli("census", "fetch", "--year", "2019", "--table", "S0101", "--out", tmp_path / "o")
    assert result.exit_code == 1 and result.stderr.startswith("error: census fetch: S0101 2019")
    assert result.stderr.count("\n") == 1 and "***" in result.stderr
    assert KEY not in result.stderr and KEY[:12] not in result.stderr


def test_an_argilla_error_is_scrubbed_before_it_is_cut():
    """A key straddling the 300-character cut used to survive in part: the cut came before the scrub."""
    from factory.review.client import _detail

    for pad in range(285, 301):
        text = _detail(RuntimeError("x" * pad + " key=" + KEY + " and more"), KEY)
        assert KEY[:6] not in text, pad


def test_an_argilla_client_error_never_shows_the_key():
    pytest.importorskip("argilla")
    from argilla._exceptions import ArgillaError

    from factory.review.client import ReviewError, errors

    with pytest.raises(ReviewError) as info:
        with errors("http://localhost:6900", KEY, "log in"):
            raise ArgillaError("y" * 235 + f" header X-Argilla-Api-Key: {KEY}")
    assert KEY[:6] not in str(info.value)


def test_a_runs_folder_that_cannot_be_written_is_one_line(cli, write_recipe, tmp_path):
    (tmp_path / "blocked").write_text("a file where a folder should be")
    path = write_recipe("name: t\nstages: {q: {uses: questions, sets: [election]}}\n")
    result = cli("build", path, "--runs-dir", tmp_path / "blocked" / "runs", "--no-progress")
    assert result.exit_code == 1
    assert (
        result.stderr.count("\n") == 1 and f"runs folder {tmp_path / 'blocked' / 'runs'}: cannot write" in result.stderr
    )
    result = cli("push", path, "--runs-dir", tmp_path / "blocked" / "runs")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "runs folder" in result.stderr


def test_push_into_a_folder_it_cannot_write_is_one_line(cli, write_recipe, tmp_path):
    path = write_recipe("name: t\nstages: {q: {uses: questions, sets: [election]}}\npublish: {profile: local}\n")
    runs = tmp_path / "runs"
    assert cli("build", path, "--runs-dir", runs, "--no-progress", "--only", "q").exit_code == 0
    (runs / "t" / "hub").write_text("a file where the published repos go")
    result = cli("push", path, "--runs-dir", runs)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and str(runs / "t" / "hub") in result.stderr
