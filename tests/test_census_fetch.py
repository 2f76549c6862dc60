"""`factory census fetch` against a Census-API-shaped server on 127.0.0.1 (serving the shipped 2018 tables), then a
build from the fetched folder: same people as from the packaged tables. The key never reaches a file."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from datasets import load_from_disk

from factory.census import acs2018
from factory.recipe import load_recipe
from factory.resources import data_path
from factory.runner import Runner

KEY = "test-key-0123456789abcdef"
TABLES = acs2018.TABLES


def _api_rows(table: str) -> list[list[str]]:
    path = data_path("census", "acs2018_1yr_state", f"acs2018_1yr_state_{table}.csv.gz")
    with gzip.open(path, "rt") as f:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
    variables = [c for c in df.columns if c not in ("GEO_ID", "state_fips", "state_po", "state_name")]
    header = ["GEO_ID", "NAME", *variables, "state"]
    return [header] + [
        [r["GEO_ID"], r["state_name"], *[r[v] for v in variables], r["state_fips"]] for _, r in df.iterrows()
    ]


class CensusStub(BaseHTTPRequestHandler):
    seen_keys: list[str] = []

    def do_GET(self):  # noqa: N802
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path.endswith(".json"):  # /2018/acs/acs1/subject/groups/S0101.json
            table = url.path.rsplit("/", 1)[-1].removesuffix(".json")
            labels = {k: v for k, v in acs2018.labels().items() if k.startswith(table + "_")}
            body = {"variables": {k: {"label": v, "predicateType": "int"} for k, v in labels.items()}}
        else:
            self.seen_keys.append(query.get("key", [""])[0])
            table = query["get"][0].removeprefix("group(").removesuffix(")")
            if table == "S9999":
                self.send_error(404, "unknown table")
                return
            body = _api_rows(table)
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), CensusStub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_fetch_then_build_from_the_fetched_folder(server, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("CENSUS_API_KEY", KEY)
    out = tmp_path / "acs2018_fetched"
    result = cli("census", "fetch", "--year", "2018", "--out", out, "--base-url", server)
    assert result.exit_code == 0, result.output
    assert CensusStub.seen_keys and set(CensusStub.seen_keys) == {KEY}
    for path in out.iterdir():
        assert KEY not in path.read_text()
    assert KEY not in result.output
    assert len(list(out.glob("acs2018_1yr_state_*.csv"))) == len(TABLES)

    tables = []
    for name, extra in (("packaged", ""), ("fetched", ", census_dir: acs2018_fetched")):
        recipe = tmp_path / f"{name}.yaml"  # same stage name, so the same seed
        recipe.write_text(
            "name: f\nstages:\n  people: {uses: meta_personas, geographies: [WY, DC], "
            f"n_per_geography: 3000{extra}}}\n"
        )
        runner = Runner(load_recipe(recipe), runs_dir=tmp_path / name, progress=False)
        runner.build()
        tables.append(load_from_disk(str(runner.store("people").data_dir)).data.table)
    assert tables[0].equals(tables[1])


def test_fetch_errors_are_one_line(server, tmp_path, cli, monkeypatch):
    monkeypatch.delenv("CENSUS_API_KEY", raising=False)
    result = cli("census", "fetch", "--year", "2018", "--out", tmp_path, "--base-url", server)
    assert result.exit_code == 1 and "set CENSUS_API_KEY" in result.stderr
    monkeypatch.setenv("CENSUS_API_KEY", KEY)
    result = cli("census", "fetch", "--year", "2018", "--table", "S9999", "--out", tmp_path, "--base-url", server)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: census fetch: S9999 2018: HTTP 404 unknown table"
    result = cli("census", "fetch", "--year", "2018", "--out", tmp_path, "--base-url", "http://127.0.0.1:9")
    assert result.exit_code == 1 and "network error" in result.stderr and KEY not in result.stderr


def test_a_folder_with_another_layout_is_refused(tmp_path, write_recipe, cli):
    folder = tmp_path / "other"
    folder.mkdir()
    labels = dict(acs2018.labels())
    labels["S1201_C02_003E"] = "Estimate!!Widowed!!Population 15 years and over!!15 to 19 years"
    pd.DataFrame({"VARIABLE": list(labels), "LABEL": list(labels.values())}).to_csv(
        folder / "x_variables.csv", index=False
    )
    path = write_recipe("name: o\nstages:\n  p: {uses: meta_personas, census_dir: other, geographies: [WY]}\n")
    result = cli("build", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "variable S1201_C02_003E is labelled" in result.stderr and "Now married" in result.stderr
