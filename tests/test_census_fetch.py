"""`factory census fetch` against a Census-API-shaped server on 127.0.0.1 (serving the shipped 2018 tables), then a
build from the fetched folder: same people as from the packaged tables. The key never reaches a file.

The package ships no detailed tables by race, so the stub makes B01001A-I (sex by age) and C15002A-I (sex by
education, 25+) for every state from the shipped tables: each state's real age x sex counts (S0101) and race groups
(DP05) raked together from age profiles that differ by race (Hispanic and multiracial people younger, White
non-Hispanic people older, as in the census), and education from S1501's real race rows by sex."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.parse
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from datasets import load_from_disk

from factory.census import acs2018
from factory.census.sources import states
from factory.recipe import load_recipe
from factory.resources import data_path
from factory.runner import Runner

KEY = "test-key-0123456789abcdef"
TABLES = acs2018.TABLES
B01001_AGES = ["Under 5 years", "5 to 9 years", "10 to 14 years", "15 to 17 years", "18 and 19 years"]
B01001_AGES += ["20 to 24 years", "25 to 29 years", "30 to 34 years", "35 to 44 years", "45 to 54 years"]
B01001_AGES += ["55 to 64 years", "65 to 74 years", "75 to 84 years", "85 years and over"]
AGE_MID = np.array([2, 7, 12, 16, 18.5, 22, 27, 32, 40, 50, 60, 70, 80, 90])
# Hispanic, then non-Hispanic White, Black, AIAN, Asian, NHPI, some other race, two or more (vocab order)
AGE_TILT = np.array([-0.5, 0.3, -0.15, -0.15, -0.05, -0.25, -0.4, -0.8])
EDU4 = ["Less than high school diploma", "High school graduate (includes equivalency)"]
EDU4 += ["Some college or associate's degree", "Bachelor's degree or higher"]


def _detailed_labels(table: str) -> dict[str, str]:
    cats = B01001_AGES if table.startswith("B01001") else EDU4
    out = {f"{table}_001E": "Estimate!!Total:"}
    for s, sex in enumerate(("Male", "Female")):
        first = 2 + s * (len(cats) + 1)
        out[f"{table}_{first:03d}E"] = f"Estimate!!Total:!!{sex}:"
        for i, c in enumerate(cats):
            out[f"{table}_{first + 1 + i:03d}E"] = f"Estimate!!Total:!!{sex}:!!{c}"
    return out


@cache
def _b01001(geo: str) -> dict[str, np.ndarray]:
    """Persons by race iteration (A-I) x sex x the 14 age groups of B01001A-I, for one state."""
    g = acs2018._Geo(geo)
    by_sex = []
    for c in (3, 5):
        five = g.s("S0101", c, range(2, 20))  # <5, 5-9, ..., 80-84, 85+
        t1517 = g.e("S0101", f"S0101_C{c:02d}_021E")
        by_sex.append(
            np.r_[
                five[:3],
                t1517,
                five[3] - t1517,
                five[4:7],
                five[7:15].reshape(4, 2).sum(1),
                five[15:17].sum(),
                five[17],
            ]
        )
    ages = np.array(by_sex)  # (2, 14)
    dp_alone = g.dp("DP05", [37, 38, 39, 44, 52, 57, 35])
    dp_nh = g.dp("DP05", range(77, 84))
    groups = np.r_[g.e("DP05", "DP05_0071E"), dp_nh]
    hisp_mix = np.maximum(dp_alone - dp_nh, 0) / max(np.maximum(dp_alone - dp_nh, 0).sum(), 1)
    # the 25+ of each group and sex as S1501's race rows say (non-Hispanic = race alone - its Hispanic share)
    s1501 = np.array([[g.e("S1501", f"S1501_C{c:02d}_{r:03d}E") for c in (3, 5)] for r in (34, 37, 40, 43, 46, 49)])
    hisp25 = np.array([g.e("S1501", f"S1501_C{c:02d}_052E") for c in (3, 5)])
    wnh25 = np.array([g.e("S1501", f"S1501_C{c:02d}_031E") for c in (3, 5)])
    older = np.vstack([hisp25, wnh25, np.nan_to_num(s1501 - hisp_mix[1:, None] * hisp25).clip(min=1)])
    w = groups[:, None, None] * ages[None] * np.exp(AGE_TILT[:, None, None] * (AGE_MID - 40) / 20)
    for _ in range(300):  # rake: each group's total, its 25+ by sex, each age x sex count
        w *= (groups / w.sum(axis=(1, 2)))[:, None, None]
        w[:, :, 6:] *= (older / w[:, :, 6:].sum(axis=2))[:, :, None]
        w *= (ages / w.sum(axis=0))[None]
    alone = w[1:] + hisp_mix[:, None, None] * w[0]
    return dict(zip("ABCDEFG", alone)) | {"H": w[1], "I": w[0]}


@cache
def _c15002(geo: str) -> dict[str, np.ndarray]:
    """Persons 25+ by race iteration x sex x 4 education levels: S1501's race rows, the middle level split as the
    state's 25+ split high school / some college."""
    g = acs2018._Geo(geo)
    rows = dict(zip("ABCDEFGHI", (28, 34, 37, 40, 43, 46, 49, 31, 52)))
    out = {}
    for s, row in rows.items():
        per_sex = []
        for c in (3, 5):
            pop, hs, ba = g.s("S1501", c, [row, row + 1, row + 2])
            grads, some = g.e("S1501", f"S1501_C{c:02d}_009E"), g.s("S1501", c, [10, 11]).sum()
            middle = hs - ba
            per_sex.append([pop - hs, middle * grads / (grads + some), middle * some / (grads + some), ba])
        out[s] = np.array(per_sex)
    return out


def _detailed_rows(table: str) -> list[list[str]]:
    header = ["GEO_ID", "NAME", *_detailed_labels(table), "state"]
    body = []
    for st in states():
        counts = (_b01001 if table.startswith("B") else _c15002)(st["state_po"])[table[-1]]
        values = []
        for sex in counts:
            values += [sex.sum(), *sex]
        values = [sum(values[0 :: len(counts[0]) + 1]), *values]
        cells = ["-999999999" if not np.isfinite(v) else str(int(round(v))) for v in values]
        body.append([f"0400000US{st['state_fips']}", st["state_name"], *cells, st["state_fips"]])
    return [header, *body]


def _api_rows(table: str) -> list[list[str]]:
    if table in acs2018.DETAILED:
        return _detailed_rows(table)
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
            labels = labels or _detailed_labels(table)
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


@pytest.fixture(scope="module")
def fetched(server, tmp_path_factory):
    """Every table `factory census fetch` asks for by default, from the stub."""
    from click.testing import CliRunner

    from factory.cli import main

    out = tmp_path_factory.mktemp("fetch") / "acs2018_fetched"
    result = CliRunner().invoke(
        main,
        ["census", "fetch", "--year", "2018", "--out", str(out), "--base-url", server],
        env={"CENSUS_API_KEY": KEY},
    )
    assert result.exit_code == 0, result.output
    assert KEY not in result.output
    return out


def _build(tmp_path, name: str, extra: str):
    recipe = tmp_path / f"{name}.yaml"  # same stage name, so the same seed
    recipe.write_text(
        f"name: f\nstages:\n  people: {{uses: meta_personas, geographies: [WY, DC], n_per_geography: 3000{extra}}}\n"
    )
    runner = Runner(load_recipe(recipe), runs_dir=tmp_path / name, progress=False)
    runner.build()
    return runner.store("people")


def test_fetch_then_build_from_the_fetched_folder(fetched, tmp_path):
    assert CensusStub.seen_keys and set(CensusStub.seen_keys) == {KEY}
    for path in fetched.iterdir():
        assert KEY not in path.read_text()
    assert len(list(fetched.glob("acs2018_1yr_state_*.csv"))) == len(TABLES) + len(acs2018.DETAILED)

    basic = tmp_path / "acs2018_basic"  # the shipped layout only: the same people as the packaged tables
    basic.mkdir()
    for path in fetched.iterdir():
        if not any(path.name.endswith(f"_{t}.csv") for t in acs2018.DETAILED):
            (basic / path.name).write_bytes(path.read_bytes())
    tables = []
    for name, extra in (("packaged", ""), ("fetched", f", census_dir: {basic}")):
        tables.append(load_from_disk(str(_build(tmp_path, name, extra).data_dir)).data.table)
    assert tables[0].equals(tables[1])


def test_detailed_tables_by_race_constrain_age_and_education(fetched, tmp_path):
    from factory.census import model

    spec = acs2018.geo_spec("DC", root=str(fetched))
    names = {m.name for m in spec.core_margins}
    assert "B01001A-I race/ethnicity x age x sex" in names
    assert "C15002A-I education x race/ethnicity x sex (25+)" in names
    assert ("age_band", "race_ethnicity") not in model.unconstrained_pairs(spec)
    assert ("age_band", "race_ethnicity") in model.unconstrained_pairs(acs2018.geo_spec("DC"))

    packaged = _build(tmp_path, "packaged", "")
    detailed = _build(tmp_path, "detailed", f", census_dir: {fetched}")
    assert "age_band x race_ethnicity" in packaged.manifest()["summary"]["unconstrained_pairs"]
    assert "age_band x race_ethnicity" not in detailed.manifest()["summary"]["unconstrained_pairs"]
    card = (detailed.dir / "artifacts" / "card_section.md").read_text()
    assert "| core: B01001A-I race/ethnicity x age x sex |" in card and "age band x race ethnicity" not in card
    assert "age band x race ethnicity" in (packaged.dir / "artifacts" / "card_section.md").read_text()
    fid = load_from_disk(str(detailed.dir / "fidelity")).to_pandas()  # 3,000 persons: the fit's own residual
    assert fid["fit_tvd"].max() <= 0.01, fid.sort_values("fit_tvd").iloc[-1]["margin"]

    # the young are as Hispanic as the stub's B01001I says, and more than the packaged fit makes them
    stub = _b01001("DC")
    want = stub["I"][:, 4:6].sum() / sum(stub[s][:, 4:6].sum() for s in "ABCDEFG")  # 18-24
    shares = []
    for store in (detailed, packaged):
        df = load_from_disk(str(store.data_dir)).to_pandas()
        young = df[df.person_id.str.startswith("DC-") & (df.age <= 24)]
        shares.append((young.race_ethnicity == 0).mean())
    assert abs(shares[0] - want) < 0.02 and abs(shares[1] - want) > abs(shares[0] - want)


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
