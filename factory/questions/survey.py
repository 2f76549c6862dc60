"""Your own survey as ground truth: human answer distributions for the questions of a user file, overall and by
group, read from a long CSV, so `evaluate` scores simulated answers against them like OpinionQA's Pew data.

The CSV (one row per question x group x option; UTF-8, header required):

    question_id,attribute,group,option,share
    q1,,,Agree,0.62                  # attribute and group empty: the overall distribution
    q1,,,Disagree,0.38
    q1,SEX,Female,Agree,0.70         # a group, named like Pew's (see below)
    q1,SEX,Female,Disagree,0.30

- `question_id`: the id in the question file (its `id` column, or the `topic_k` question_id of a JSON file), or
  the full `<source>/<id>`.
- `attribute`, `group`: empty for the overall distribution; otherwise one of the groups `evaluate` maps census
  people to: AGE (18-29, 30-49, 50-64, 65+), SEX, EDUCATION, CREGION, RACE, CITIZEN, MARITAL, INCOME with Pew's
  group names (`factory.evaluate.metrics.PEW_GROUPS`).
- `option`: an option's text exactly as in the question file (case-insensitive).
- `share` (each question x group sums to 1, within 0.01) or `count` (respondents; shares follow from them).
Options a group has no row for get 0. A question with human answers gets ordinal positions 1..N in the order of
its options (a "Refused" option none), so the alignment treats them as ordered; for unordered options read the
total variation (tv) instead. Every mistake is one line naming the file, the row and the column.
"""

from __future__ import annotations

import csv
from pathlib import Path

from factory.errors import DataError, did_you_mean

TOLERANCE = 0.01


def groups_known() -> dict[str, list[str]]:
    """attribute -> the group names people are mapped to (what a survey file may name)."""
    from factory.evaluate import metrics as M

    out = {a: sorted(set(t.values())) for a, t in M.PEW_GROUPS.items()}
    out["AGE"] = [g for *_, g in M.AGE_GROUPS]
    return out


def attach(path: Path, rows: list[dict]) -> int:
    """Read the CSV at `path` into the matching question rows (human_distribution, human_n, human_groups,
    ordinal); returns how many questions got human answers."""
    by_id: dict[str, dict] = {}
    for r in rows:
        by_id[r["question_id"]] = r
        by_id.setdefault(r["source_id"], r)
    known = groups_known()
    tables: dict[tuple, dict] = {}  # (question_id, attribute, group) -> {"values": [...], "rows": [...]}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            for need in ("question_id", "attribute", "group", "option"):
                if need not in header:
                    raise DataError(f"{path}: missing column '{need}' (have: {', '.join(header) or 'none'})")
            kinds = [c for c in ("share", "count") if c in header]
            if len(kinds) != 1:
                raise DataError(f"{path}: give one of the columns 'share' or 'count' (have: {', '.join(header)})")
            kind = kinds[0]
            for line, rec in enumerate(reader, start=2):
                where = f"{path}: row {line}"
                qid = (rec.get("question_id") or "").strip()
                q = by_id.get(qid)
                if q is None:
                    raise DataError(
                        f"{where}, column question_id: no question '{qid}' in the question files"
                        f"{did_you_mean(qid, list(by_id))}"
                    )
                attribute, group = (rec.get("attribute") or "").strip(), (rec.get("group") or "").strip()
                if bool(attribute) != bool(group):
                    column = "group" if attribute else "attribute"
                    raise DataError(f"{where}, column {column}: give both attribute and group, or neither (overall)")
                if attribute and attribute not in known:
                    raise DataError(
                        f"{where}, column attribute: unknown attribute '{attribute}'{did_you_mean(attribute, known)}"
                        f" (known: {', '.join(known)})"
                    )
                if attribute and group not in known[attribute]:
                    raise DataError(
                        f"{where}, column group: unknown {attribute} group '{group}'"
                        f"{did_you_mean(group, known[attribute])} (known: {', '.join(known[attribute])})"
                    )
                option = (rec.get("option") or "").strip()
                folded = [o.casefold() for o in q["options"]]
                if option.casefold() not in folded:
                    raise DataError(
                        f"{where}, column option: '{option}' is not an option of {q['question_id']}"
                        f"{did_you_mean(option, q['options'])} (options: {' | '.join(q['options'])})"
                    )
                try:
                    value = float(rec.get(kind) or "")
                except ValueError:
                    raise DataError(f"{where}, column {kind}: '{rec.get(kind)}' is not a number") from None
                if not value >= 0:
                    raise DataError(f"{where}, column {kind}: {value} is negative")
                entry = tables.setdefault(
                    (q["question_id"], attribute, group), {"values": [0.0] * len(q["options"]), "rows": []}
                )
                entry["values"][folded.index(option.casefold())] += value
                entry["rows"].append(line)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None

    questions = {r["question_id"]: r for r in rows}
    for (qid, attribute, group), entry in tables.items():
        total = sum(entry["values"])
        rows_text = (
            f"rows {entry['rows'][0]}-{entry['rows'][-1]}" if len(entry["rows"]) > 1 else f"row {entry['rows'][0]}"
        )
        who = f"{attribute}={group}" if attribute else "overall"
        if kind == "share" and abs(total - 1.0) > TOLERANCE:
            raise DataError(f"{path}: {rows_text}, column share: {qid} {who}: shares sum to {total:.4g}, not 1")
        if total <= 0:
            raise DataError(f"{path}: {rows_text}, column {kind}: {qid} {who}: no answers")
        q = questions[qid]
        if attribute:
            q["human_groups"] = (q["human_groups"] or []) + [
                {"attribute": attribute, "group": group, "counts": entry["values"]}
            ]
        else:
            q["human_distribution"] = [v / total for v in entry["values"]]
            q["human_n"] = round(total) if kind == "count" else None
    answered = {qid for qid, _, _ in tables}
    for qid in answered:
        q = questions[qid]
        if q["human_distribution"] is None:
            raise DataError(f"{path}: question {qid} has group rows but no overall distribution (attribute empty)")
        if all(o is None for o in q["ordinal"]):
            position = 0
            for i in range(len(q["options"])):
                if i != q["refusal_index"]:
                    position += 1
                    q["ordinal"][i] = float(position)
    return len(answered)
