"""Census parsing (API format, 2023 labels, tidy files), IPF, Big Five; malformed files fail with one line."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from factory.census import acs2018, bigfive, vocab
from factory.census.apiformat import parse_variable, read_api_table
from factory.census.ipf import Margin, ipf, margin_of
from factory.errors import DataError
from factory.resources import data_path

TABLE = data_path("census", "acs2018_1yr_state", "acs2018_1yr_state_S0101.csv.gz")


def test_api_parser_reads_shipped_tables():
    for name in acs2018.TABLES:
        t = acs2018.table(name)
        assert len(t.values) == 51 and "DC" in t.values.index
    t = acs2018.table("S0101")
    assert t.estimate("WY", "S0101_C01_001E") == 577737
    assert t.label("S0101_C03_021E").endswith("15 to 17 years")
    assert parse_variable("S1201_C02_004E") == {"table": "S1201", "col": "C02", "row": "004", "kind": "E"}
    assert parse_variable("DP05_0071PE") == {"table": "DP05", "col": None, "row": "0071", "kind": "PE"}
    assert parse_variable("state_po") is None


def test_annotation_codes_read_as_missing_with_their_meaning():
    t = acs2018.table("S0101")
    assert np.isnan(t.estimate("WY", "S0101_C02_001E")) or t.estimate("WY", "S0101_C02_001E") > 0
    s0501 = acs2018.table("S0501")
    assert np.isnan(s0501.estimate("WY", "S0501_C02_001E"))  # S0501 is not published for Wyoming
    dp03 = acs2018.table("DP03")
    assert dp03.annotation("NY", "DP03_0009E") == "not applicable"


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "t.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,message",
    [
        ("GEO_ID,state_po,S0101_C01_001E\nx,WY,abc\n", "column 'S0101_C01_001E': 'abc' is not a number"),
        ("GEO_ID,state_po,S0101_C01_001E\nx,WY,-5\n", "negative value -5 is neither a count nor a Census annotation"),
        ("GEO_ID,S0101_C01_001E\nx,5\n", "missing column 'state_po'"),
        ("GEO_ID,state_po,X_1E\nx,WY,5\n", "no S0101_... estimate columns"),
        ("GEO_ID,state_po,S0101_C01_001E\nx,WY,5\ny,WY,6\n", "geography 'WY' appears twice"),
    ],
)
def test_malformed_api_files(tmp_path, text, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        read_api_table(_write(tmp_path, text), "S0101")
    assert "\n" not in str(info.value) and "t.csv" in str(info.value)


def test_unknown_geography_and_missing_column(tmp_path):
    with open(TABLE, "rb") as f:
        raw = gzip.decompress(f.read()).decode()
    t = read_api_table(_write(tmp_path, raw), "S0101")
    with pytest.raises(DataError, match="unknown geography 'PR'"):
        t.row("PR")
    with pytest.raises(DataError, match="missing column 'S0101_C09_001E'"):
        t.estimates("WY", ["S0101_C09_001E"])
    with pytest.raises(DataError, match=r"unknown geography 'NYC' \(did you mean 'NY'\?\)"):
        acs2018.geo_spec("NYC")


def test_ipf_recovers_a_joint_from_its_margins():
    rng = np.random.default_rng(1)
    truth = rng.random((4, 3, 5)) * 100
    dims, sizes = ["a", "b", "c"], [4, 3, 5]
    ident = {d: np.arange(s) for d, s in zip(dims, sizes)}
    margins = [
        Margin("ab", ("a", "b"), {"a": ident["a"], "b": ident["b"]}, truth.sum(axis=2), mode="count"),
        Margin("c|a", ("a", "c"), {"a": ident["a"], "c": ident["c"]}, truth.sum(axis=1), given=("a",)),
        Margin("c|b", ("b", "c"), {"b": ident["b"], "c": ident["c"]}, truth.sum(axis=0), given=("b",)),
    ]
    fit = ipf(dims, sizes, margins, tol=1e-10, max_iter=2000)
    for m in margins:
        np.testing.assert_allclose(margin_of(fit.joint, dims, m), m.table, rtol=1e-6)
    assert fit.max_error < 1e-8


def test_ipf_keeps_structural_zeros_and_coarse_universes():
    dims, sizes = ["age", "edu"], [3, 3]
    seed = np.ones((3, 3))
    seed[0, 2] = 0  # the youngest cannot have the highest level
    margins = [
        Margin("age", ("age",), {"age": np.arange(3)}, np.array([10.0, 20.0, 30.0]), mode="count"),
        # an education table for the two older groups only, with them pooled
        Margin(
            "edu 1+",
            ("age", "edu"),
            {"age": np.array([-1, 0, 0]), "edu": np.arange(3)},
            np.array([[10.0, 20.0, 20.0]]),
            given=("age",),
        ),
    ]
    fit = ipf(dims, sizes, margins, seed=seed, tol=1e-10, max_iter=1000)
    assert fit.joint[0, 2] == 0
    np.testing.assert_allclose(fit.joint.sum(axis=1), [10, 20, 30])
    np.testing.assert_allclose(fit.joint[1:].sum(axis=0) / 50, [0.2, 0.4, 0.4], atol=1e-8)


def test_ipf_rejects_bad_margins():
    with pytest.raises(ValueError, match="non-negative"):
        ipf(["a"], [2], [Margin("m", ("a",), {"a": np.arange(2)}, np.array([1.0, -1.0]))])
    with pytest.raises(ValueError, match="table has 3"):
        ipf(["a"], [2], [Margin("m", ("a",), {"a": np.arange(2)}, np.array([1.0, 1.0, 1.0]))])


def test_big_five_model_matches_the_study():
    mu = bigfive.conditional_mean(np.array([25, 60]), np.array([True, False]), np.array([1, 0]))
    # the study's worked examples, in OCEAN order
    np.testing.assert_allclose(mu[0], [0.718, 0.700, 0.665, 0.671, 0.543], atol=1e-3)
    np.testing.assert_allclose(mu[1], [0.757, 0.796, 0.623, 0.767, 0.543], atol=1e-3)
    rng = np.random.default_rng(0)
    n = 200_000
    draws = bigfive.sample(np.full(n, 40), np.ones(n, bool), np.ones(n), rng)
    assert draws.min() >= 0 and draws.max() <= 1
    cov = np.cov(draws.T)
    np.testing.assert_allclose(cov, bigfive.model()["cov"], atol=4e-4)


def test_systematic_sampling_and_stratified_children_are_exact():
    from factory.census.ipf import systematic_sample
    from factory.census.model import stratified_conditional

    rng = np.random.default_rng(3)
    p = rng.random(50)
    cells = systematic_sample(p, 10_000, rng)
    expected = p / p.sum() * 10_000
    assert np.abs(np.bincount(cells, minlength=50) - expected).max() < 1
    cdf = np.cumsum(rng.random((4, 6)), axis=1)
    cdf /= cdf[:, -1:]
    parent = rng.integers(0, 4, 20_000)
    child = stratified_conditional(cdf, parent, rng)
    for g in range(4):
        got = np.bincount(child[parent == g], minlength=6)
        want = np.diff(np.r_[0, cdf[g]]) * (parent == g).sum()
        assert np.abs(got - want).max() <= 1


# --- tidy files ---------------------------------------------------------------------------------------------
GOOD = (
    "geography,dimension,category,sex,count\n"
    "Town,age,18-24,Male,100\nTown,age,18-24,Female,110\nTown,age,25+,Male,400\nTown,age,25+,Female,420\n"
    'Town,marital_status,Never married,Male,50\nTown,marital_status,"Now married, except separated",Male,40\n'
    "Town,marital_status,Widowed,Male,2\nTown,marital_status,Divorced,Male,6\nTown,marital_status,Separated,Male,2\n"
)


def _recipe(tmp_path: Path, csv_text: str) -> Path:
    (tmp_path / "m.csv").write_text(csv_text)
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: t\nstages:\n  people: {uses: meta_personas, source: tidy, marginals: m.csv, "
        "base_geography: VT, geographies: all, n_per_geography: 500}\n"
    )
    return path


def test_tidy_file_builds(tmp_path, cli):
    result = cli("build", _recipe(tmp_path, GOOD), "--runs-dir", tmp_path / "runs", "--no-progress")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "text,message",
    [
        (GOOD.replace("dimension,", "dim,"), "missing column 'dimension'"),
        (GOOD.replace(",100\n", ",-100\n"), "m.csv:2: negative count -100"),
        (GOOD.replace(",100\n", ",lots\n"), "m.csv:2: count 'lots' is not a number"),
        (GOOD.replace("marital_status,Never", "marital,Never"), "unknown dimension 'marital'"),
        (GOOD.replace("Widowed", "Widow"), "unknown marital_status category 'Widow' (did you mean 'Widowed'?)"),
        (GOOD.replace("18-24", "18-22"), "age range '18-22' cuts the 20-24 band"),
        (GOOD.replace(",count\n", ",share\n", 1), "m.csv:2: age shares sum to 500.000, not 1"),
        (GOOD.replace("sex,count", "gender,count"), "column 'gender' is not a dimension"),
        (
            "geography,dimension,category,share\nTown,sex,Male,0.6\nTown,sex,Female,0.6\n",
            "sex shares sum to 1.200, not 1",
        ),
        (GOOD.replace("Town,marital", "Village,marital"), "needs an age table"),
    ],
)
def test_malformed_tidy_files_fail_with_one_line(tmp_path, cli, text, message):
    result = cli("build", _recipe(tmp_path, text), "--runs-dir", tmp_path / "runs", "--no-progress")
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_unknown_geography_in_recipe_is_caught_by_validate(write_recipe, cli):
    path = write_recipe("name: t\nstages:\n  people: {uses: meta_personas, geographies: [NY, XX]}\n")
    result = cli("validate", path)
    assert result.exit_code == 2
    assert "stages.people: unknown geography 'XX' for acs2018" in result.stderr


def test_vocabulary_is_consistent():
    assert len(vocab.AGE) == len(vocab.AGE_BANDS) == 15
    assert len(acs2018.OCC_ROWS) == len(vocab.OCCUPATION) and len(acs2018.IND_ROWS) == len(vocab.INDUSTRY)
    labels = acs2018.labels()
    for row, name in zip(acs2018.OCC_ROWS, vocab.OCCUPATION):
        label = labels[f"S2401_C01_{row:03d}E"].split("!!")[-1].lower()
        assert name.split(",")[0].split(" ")[0].lower() in label, (name, label)
    for row, name in zip(acs2018.IND_ROWS, vocab.INDUSTRY):
        label = labels[f"S2403_C01_{row:03d}E"].split("!!")[-1].lower()
        assert name.split(",")[0].lower() in label, (name, label)


def test_ls_names_the_assumed_joints(cli):
    result = cli("ls")
    assert result.exit_code == 0
    assert "joints no census table constrains" in result.stdout and "age_band x race_ethnicity" in result.stdout
