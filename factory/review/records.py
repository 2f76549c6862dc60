"""Pairs as Argilla records, and reviewers' responses as a decisions file: plain data, no Argilla import.

A record shows one pair: fields `prompt` (the conversation as markdown), `target_profile` (what the better response
should fit), `response_a` and `response_b` (chosen and rejected in an order drawn per pair from the review stage's seed,
so A is not always the judge's pick); metadata for filtering (`TERMS`, the target's Big Five traits and the
judge's margin in `FLOATS`) plus the hidden `a_is` (which of chosen / rejected A shows, read back at import);
and the judge's pick as a suggestion on `better`. Its id is `pair_id`, a hash of prompt, chosen and rejected, so
the same pair is the same record in every export, and a changed pair is a new one.

The decisions file (JSONL, one line per submitted response, sorted by pair, reviewer) holds `pair_id`, `user`
(the reviewer's user name, or id where names cannot be listed), `user_id`, `better` ('a' | 'b', as answered),
`prefers` ('chosen' | 'rejected': `better` mapped back through `a_is`, relative to the judge), `rating` (1-5 or
null) and `comment` (or null). It holds no time stamps, so importing unchanged responses writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from factory.census.bigfive import TRAITS, bands
from factory.errors import DataError
from factory.fingerprint import canonical_json
from factory.seeds import derive_seed

FIELDS = ("prompt", "target_profile", "response_a", "response_b")
QUESTIONS = ("better", "rating", "comment")
TERMS = ("state", "age_band", "target", "rejected_style", "rule", "split")
FLOATS = (*TRAITS, "margin")
ORDER = "a_is"  # hidden metadata property: 'chosen' or 'rejected'
RATINGS = (1, 2, 3, 4, 5)
DECISION_KEYS = ("pair_id", "user", "user_id", "better", "prefers", "rating", "comment")


def pair_id(row: dict) -> str:
    """A stable id of a pair: the first 16 hex digits of the sha256 of its prompt, chosen and rejected."""
    payload = {k: _messages(row[k]) for k in ("prompt", "chosen", "rejected")}
    return hashlib.sha256(canonical_json(payload)).hexdigest()[:16]


def _messages(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):  # a plain-text pair (TRL's standard format) rather than messages
        return [{"role": "", "content": value}]
    return [{"role": str(m.get("role") or ""), "content": str(m.get("content") or "")} for m in value or []]


def a_is_chosen(seed: int, pid: str) -> bool:
    """Whether response A shows the judge's chosen response; drawn per pair, independent of the other pairs."""
    return derive_seed(seed, "review-order", pid) % 2 == 0


def render_prompt(messages: Any) -> str:
    """The conversation as markdown: each message under its role in bold."""
    parts = []
    for m in _messages(messages):
        role = m["role"].capitalize() or "Prompt"
        parts.append(f"**{role}**\n\n{m['content'].strip()}")
    return "\n\n".join(parts)


def render_response(messages: Any) -> str:
    ms = _messages(messages)
    if len(ms) == 1:
        return ms[0]["content"].strip()
    return render_prompt(ms)


def render_target(row: dict) -> str:
    name = str(row.get("target") or "")
    vector = row.get("target_vector")
    if row.get("rule", "judge") != "opinion" and vector is not None and len(vector) == len(TRAITS):
        lines = [f"**{name}** (Big Five, 0 = very low, 1 = very high)" if name else "**Big Five target**", ""]
        lines += [f"- {trait}: {band} ({value})" for trait, band, value in bands(vector)]
        return "\n".join(lines)
    return f"**{name}**" if name else "(no target recorded)"


def record(row: dict, seed: int) -> dict[str, Any]:
    """One pair as a record: {id, fields, metadata, suggestion: {value, score, agent}} (plain values)."""
    pid = pair_id(row)
    chosen_first = a_is_chosen(seed, pid)
    chosen, rejected = render_response(row["chosen"]), render_response(row["rejected"])
    metadata: dict[str, Any] = {}
    for key in TERMS:
        value = row.get(key)
        if value is not None and str(value) != "":
            metadata[key] = str(value)
    vector = row.get("target_vector")
    if row.get("rule", "judge") != "opinion" and vector is not None and len(vector) == len(TRAITS):
        metadata.update({t: round(float(v), 4) for t, v in zip(TRAITS, vector) if v is not None})
    margin = row.get("margin")
    if margin is not None and math.isfinite(float(margin)):
        metadata["margin"] = round(float(margin), 4)
    metadata[ORDER] = "chosen" if chosen_first else "rejected"
    suggestion = {
        "value": "a" if chosen_first else "b",
        # the judge's confidence: its margin between the two, within Argilla's [0, 1]
        "score": None if "margin" not in metadata else min(1.0, max(0.0, metadata["margin"])),
        "agent": str(row.get("judge") or "judge"),
    }
    return {
        "id": pid,
        "fields": {
            "prompt": render_prompt(row["prompt"]),
            "target_profile": render_target(row),
            "response_a": chosen if chosen_first else rejected,
            "response_b": rejected if chosen_first else chosen,
        },
        "metadata": metadata,
        "suggestion": suggestion,
    }


def prefers(better: str, a_is: str | None, seed: int, pid: str) -> str:
    """'chosen' or 'rejected': which of the judge's responses the reviewer's `better` ('a' | 'b') points at."""
    a_chosen = a_is == "chosen" if a_is in ("chosen", "rejected") else a_is_chosen(seed, pid)
    return "chosen" if (better == "a") == a_chosen else "rejected"


# --- the decisions file -------------------------------------------------------------------------------------------
def write_decisions(path: Path, rows: Iterable[dict]) -> int:
    """Write decisions sorted by pair and reviewer (atomically: a new file, renamed); returns the line count."""
    out = sorted(({k: r.get(k) for k in DECISION_KEYS} for r in rows), key=lambda r: (r["pair_id"], r["user"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in out))
    os.replace(tmp, path)
    return len(out)


def read_decisions(path: Path) -> list[dict]:
    """The decisions file's rows, checked; a malformed line is a `DataError` naming the file and line."""
    rows, seen = [], set()
    for n, line in enumerate(path.read_text().split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON ({exc.msg}); rerun `factory review import` to rewrite it") from None
        if not isinstance(r, dict):
            raise DataError(f"{where}: expected a JSON object")
        for key in ("pair_id", "user"):
            if not isinstance(r.get(key), str) or not r[key]:
                raise DataError(f"{where}: '{key}' must be a non-empty string")
        if r.get("prefers") not in ("chosen", "rejected"):
            raise DataError(f"{where}: 'prefers' must be 'chosen' or 'rejected', got {r.get('prefers')!r}")
        rating = r.get("rating")
        if rating is not None and (isinstance(rating, bool) or rating not in RATINGS):
            raise DataError(f"{where}: 'rating' must be 1-5 or null, got {rating!r}")
        if r.get("comment") is not None and not isinstance(r["comment"], str):
            raise DataError(f"{where}: 'comment' must be a string or null")
        key = (r["pair_id"], r["user"])
        if key in seen:
            raise DataError(f"{where}: a second response of '{r['user']}' to pair {r['pair_id']}")
        seen.add(key)
        rows.append(r)
    return rows
