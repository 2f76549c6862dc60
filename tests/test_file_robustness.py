"""Malformed input files fail with one line naming the file, row and field, and well-formed ones that used to be
refused (a byte-order mark, a tidy file of shares with an age table of counts) are read: tidy census marginals
and user question files (JSON in the context.json shape, CSV)."""

from __future__ import annotations

import json
import re

import pytest

from factory.census import tidy
from factory.errors import DataError
from factory.questions.sets import read_context_json, read_csv

AGE_BY_SEX = "Town,age,18-24,Male,100\nTown,age,18-24,Female,110\nTown,age,25+,Male,400\nTown,age,25+,Female,420\n"
GOOD = "geography,dimension,category,sex,count\n" + AGE_BY_SEX
MIXED = (
    "geography,dimension,category,sex,count,share\n"
    + AGE_BY_SEX.replace("\n", ",\n")
    + 'Town,marital_status,Never married,Male,,0.5\nTown,marital_status,"Now married, except separated",Male,,0.4\n'
    "Town,marital_status,Widowed,Male,,0.02\nTown,marital_status,Divorced,Male,,0.06\n"
    "Town,marital_status,Separated,Male,,0.02\n"
)


def spec(tmp_path, text: str, name: str = "m.csv"):
    path = tmp_path / name
    path.write_text(text)
    tidy.read.cache_clear()
    source = tidy.TidySource(path, "VT")
    return [source.geo_spec(g, fit_base=False) for g in source.geographies()["geo"]]


@pytest.mark.parametrize(
    "text, message",
    [
        ("geography,dimension,category,sex,count\n", "m.csv: no rows (only a header)"),
        ("", "m.csv: no rows (the file is empty)"),
        (GOOD.replace(",100\n", ",0\n").replace(",110\n", ",0\n").replace(",400\n", ",0\n").replace(",420\n", ",0\n"),
         "geography 'Town' has no people aged 18 to 99"),
        ("geography,dimension,category,count\nKids,age,0-4,100\nKids,age,5-9,100\n",
         "geography 'Kids' has no people aged 18 to 99"),
        ("geography,dimension,category,share\nTown,age,18-24,0.2\nTown,age,25+,0.8\n",
         "geography 'Town' needs an age table (age, or age by sex) with counts (a file of shares can add a 'count'"),
        (GOOD + "Town,age,18-24,,300\nTown,age,25+,,700\n",
         "count tables 'm age x sex' (1,030 people aged 18+) and 'm age' (1,000) disagree"),
        (MIXED.replace("Town,age,18-24,Male,100,", "Town,age,18-24,Male,100,0.3"),
         "m.csv:2: gives both a count and a share"),
        (MIXED.replace("Town,marital_status,Widowed,Male,,0.02", "Town,marital_status,Widowed,Male,2,"),
         "the marital_status table mixes counts and shares"),
        (MIXED.replace(",Male,,0.5", ",Female,,0.5"),
         "m.csv:6: marital_status shares sum to 0.500, not 1 (given sex 'Female')"),
    ],
)  # fmt: skip
def test_malformed_tidy_files_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(DataError, match=None) as info:
        spec(tmp_path, text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_share_sum_error_shows_the_failing_condition_s_sum(tmp_path):
    """The first condition summed to 1, so the message used to print 1.000 for a table that was off."""
    text = (
        "geography,dimension,category,sex,count,share\nTown,age,18-24,,100,\n"
        "Town,marital_status,Never married,Male,,1.0\n"
        "Town,marital_status,Never married,Female,,0.7\nTown,marital_status,Widowed,Female,,0.1\n"
    )
    with pytest.raises(DataError, match=r"shares sum to 0\.800, not 1 \(given sex 'Female'\)"):
        spec(tmp_path, text)


def test_shares_work_beside_an_age_table_of_counts_and_a_bom_is_read(tmp_path):
    from factory.census import model

    (mixed,) = spec(tmp_path, MIXED)
    assert mixed.population == 1030
    assert [m.mode for m in mixed.core_margins] == ["count", "share"]
    fitted = model.fit(mixed)
    assert abs(fitted.core.sum() - 1030) < 1
    (bom,) = spec(tmp_path, "\ufeff" + GOOD, "bom.csv")
    assert bom.population == 1030


# --- question files ---------------------------------------------------------------------------------------------


def question(**item) -> dict:
    base = {"question_id": "q1", "topic": "Which?", "candidates": {"A": {"stance": "Yes"}, "B": {"stance": "No"}}}
    return {"t1": {**base, **item}}


@pytest.mark.parametrize(
    "data, message",
    [
        (question(candidates={"A": {"stance": "Yes"}}), "t1.candidates: a choice question needs at least two"),
        (question(candidates={}), "t1.candidates: expected a non-empty mapping"),
        (question(candidates={"A": {"stance": "Yes"}, "B": {"stance": " "}}), "t1.candidates[1]: empty option"),
        (question(candidates={"A": {"stance": "Yes"}, "B": {"stance": "yes"}}), "option 'yes' is given twice"),
        (question(candidates={chr(65 + i) + str(i): {"stance": f"o{i}"} for i in range(27)}), "27 options; at most 26"),
        (question(topic=""), "t1.topic: the question text is empty"),
        (question(topic=None), "t1.topic: the question text is empty or not text"),
        (question(question_id=None), "t1.question_id: expected text or a whole number, got null"),
        (question(question_id=True), "t1.question_id: expected text or a whole number, got true"),
        (question(question_id=" "), "t1.question_id: expected text"),
    ],
)
def test_bad_json_questions_name_the_file_key_and_field(tmp_path, data, message):
    path = tmp_path / "q.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as info:
        read_context_json(path, "q", "q")
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_duplicate_json_keys_are_an_error_not_the_last_one(tmp_path):
    path = tmp_path / "q.json"
    one = json.dumps(question()["t1"])
    path.write_text('{"t1": ' + one + ', "t1": ' + one + "}")
    with pytest.raises(DataError, match="q.json: duplicate key 't1'"):
        read_context_json(path, "q", "q")
    path.write_text(
        '{"t1": {"question_id": "q", "topic": "x", "candidates": {"A": {"stance": "a"}, "A": {"stance": "b"}}}}'
    )
    with pytest.raises(DataError, match="duplicate key 'A'"):
        read_context_json(path, "q", "q")


def test_a_byte_order_mark_is_read(tmp_path):
    (tmp_path / "q.json").write_text("\ufeff" + json.dumps(question()), encoding="utf-8")
    (tmp_path / "q.csv").write_text("\ufefftopic,question,options\nx,Which?,Yes|No\n", encoding="utf-8")
    assert read_context_json(tmp_path / "q.json", "q", "q")[0]["options"] == ["Yes", "No"]
    assert read_csv(tmp_path / "q.csv", "q")[0]["options"] == ["Yes", "No"]


@pytest.mark.parametrize(
    "options, message",
    [
        ("Yes|yes", "q.csv:2: options[1]: option 'yes' is given twice"),
        ("|".join(f"o{i}" for i in range(27)), "at most 26"),
    ],
)
def test_bad_csv_options_name_the_row(tmp_path, options, message):
    (tmp_path / "q.csv").write_text(f"topic,question,options\nx,Which?,{options}\n")
    with pytest.raises(DataError, match=re.escape(message)):
        read_csv(tmp_path / "q.csv", "q")
