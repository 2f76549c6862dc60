"""Apply human review decisions from Argilla to preference pairs: majority vote, swaps, ties dropped, who reviewed what.

Input (role `pairs`): preference pairs (`preferences`, or any dataset with prompt / chosen / rejected).
Output (one row per pair kept): every input column, unchanged except where the reviewers' majority preferred the
judge's rejected response, plus
    pair_id (str: sha256 of prompt, chosen and rejected as the judge ordered them, first 16 hex digits; the Argilla
    record id), review_status (str: agreed | swapped | unreviewed), votes_chosen, votes_rejected (int32: reviewers
    preferring the response now in `chosen` / `rejected`), reviewers (list[str]: user names, sorted),
    rating (float32 | null: mean 1-5 rating of the majority's reviewers), comments (list[str], by reviewer)
Swapped pairs exchange chosen / rejected, chosen_score / rejected_score, chosen_vector / rejected_vector and
chosen_person_id / rejected_person_id, and negate `margin` (the judge's scores stay with their responses);
columns describing the pair as the judge built it (target, question_id, rejected_style, state, age_band, split,
judge) are kept. Ties are dropped; unreviewed pairs are kept (`keep_unreviewed`) or dropped. The output still is a
TRL preference dataset: `train_dpo` trains on it unchanged.
Extra `reviewers` (one row per reviewer): reviewer (str), responses (int32: on pairs of this input),
    agreed_with_judge, with_majority, in_ties (int32), mean_rating (float32 | null)
Extra `dropped` (one row per pair left out): pair_id, question_id, target (str | null), reason (str: tie |
    unreviewed), votes_chosen, votes_rejected (int32, as the judge ordered the pair), reviewers (list[str])
Manifest summary: pairs, reviewed, agreed, swapped, ties_dropped, unreviewed, pending (some votes, fewer than
`min_submitted`), judge_agreement, responses, stale_responses (for pairs not in this input), the decisions file
and its sha256, and per reviewer: responses, agreed_with_judge, with_majority.

Example:
    stages:
      pairs: {uses: preferences, inputs: [answers, people, questions], judge: {backend: judge}}
      reviewed:
        uses: review
        inputs: [pairs]
        min_submitted: 3          # reviewers per pair; fewer votes leave a pair unreviewed
        keep_unreviewed: false    # train only on pairs people checked
    # factory build recipe.yaml --only pairs
    # factory review export recipe.yaml      (ARGILLA_API_URL, ARGILLA_API_KEY set; reviewers answer in Argilla)
    # factory review import recipe.yaml      (writes reviews/<recipe>-reviewed.jsonl, builds `reviewed`)

The stage never talks to Argilla: it reads the pairs and the decisions file `factory review import` writes
(`responses`, default `reviews/<recipe>-<stage>.jsonl` beside the recipe: human decisions cannot be rebuilt, so
they live with the recipe, where they can be kept under version control, not in the runs folder). The file's
bytes are part of the fingerprint: each import that brings new responses is a new dataset version, and the same
responses give the same bytes. Before the first import every pair is unreviewed (or the build fails with
`require_reviews: true`). A pair has the majority's verdict once `min_submitted` reviewers submitted; the A/B
order shown in Argilla is drawn from this stage's seed per pair and undone at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from factory.errors import DataError, StageError
from factory.options import OptionalDataFile, StageOptions, operational
from factory.stage import Columns, Needs, StageContext, StageOutput, rows_dataset

VERSION = 1
INPUTS = {"pairs": Needs("prompt", "chosen", "rejected", description="preference pairs (the preferences stage)")}
ADDED = {
    "pair_id": "string",
    "review_status": "string",
    "votes_chosen": "int32",
    "votes_rejected": "int32",
    "reviewers": "list<string>",
    "rating": "float32",
    "comments": "list<string>",
}
OUTPUTS = {
    # every column of the pairs (their types are theirs), then the review's own
    "data": Columns({"prompt": "any", "chosen": "any", "rejected": "any", **ADDED}, open=True),
    "reviewers": Columns(
        {
            "reviewer": "string",
            "responses": "int32",
            "agreed_with_judge": "int32",
            "with_majority": "int32",
            "in_ties": "int32",
            "mean_rating": "float32",
        }
    ),
    "dropped": Columns(
        {
            "pair_id": "string",
            "question_id": "string",
            "target": "string",
            "reason": "string",
            "votes_chosen": "int32",
            "votes_rejected": "int32",
            "reviewers": "list<string>",
        }
    ),
}
PAIRED = (("chosen", "rejected"), ("chosen_score", "rejected_score"), ("chosen_vector", "rejected_vector"),
          ("chosen_person_id", "rejected_person_id"))  # fmt: skip


class Options(StageOptions):
    dataset: str | None = operational(
        None, description="Argilla dataset name; default <recipe>-<stage>", validate_default=True
    )
    workspace: str | None = operational(None, description="Argilla workspace; default your first workspace")
    min_submitted: int = Field(
        1,
        ge=1,
        le=50,
        description="reviewers per pair: Argilla completes a record after this many submitted responses; a pair "
        "with fewer votes stays unreviewed",
    )
    responses: OptionalDataFile | None = Field(
        None,
        validate_default=True,
        description="decisions file `factory review import` writes (JSONL, relative to the recipe); default "
        "reviews/<recipe>-<stage>.jsonl; its bytes are part of the fingerprint",
    )
    keep_unreviewed: bool = Field(True, description="keep pairs nobody (or too few) reviewed, as 'unreviewed'")
    pseudonymous: bool = Field(
        False,
        description="name reviewers 'reviewer-<hash of their user id>' in the output, its extras and the summary "
        "(set it before publishing; the decisions file beside the recipe keeps the user names)",
    )
    require_reviews: bool = Field(False, description="fail the build while no decisions file exists")
    timeout: float = operational(60.0, description="seconds per Argilla request (export / import)", gt=0)
    retries: int = operational(3, description="connection retries per Argilla request", ge=0, le=10)

    @field_validator("dataset", "responses", mode="before")
    @classmethod
    def _named_after_stage(cls, value: Any, info: ValidationInfo) -> Any:
        ctx = info.context or {}
        if value is not None or "recipe" not in ctx:
            return value
        name = f"{ctx['recipe']}-{ctx['stage']}"
        return name if info.field_name == "dataset" else f"reviews/{name}.jsonl"


# --- the stage --------------------------------------------------------------------------------------------------
def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    from factory.review import records as R

    pairs = inputs["pairs"]
    path = options.responses.resolved if options.responses is not None else None
    decisions = R.read_decisions(path) if path is not None and path.is_file() else None
    if decisions is None and options.require_reviews:
        raise StageError(
            f"stages.{ctx.stage}: no review decisions yet ({options.responses}); run `factory review export` on "
            "this recipe, let reviewers answer in Argilla, then `factory review import`"
        )
    rows = pairs.to_list()
    ids = [R.pair_id(r) for r in rows]
    if decisions and options.pseudonymous:
        decisions = [{**d, "user": pseudonym(d)} for d in decisions]
    votes: dict[str, list[dict]] = {}
    for d in decisions or []:
        votes.setdefault(d["pair_id"], []).append(d)
    known = set(ids)
    stale = sum(len(v) for pid, v in votes.items() if pid not in known)
    votes = {pid: sorted(v, key=lambda d: d["user"]) for pid, v in votes.items() if pid in known}

    verdicts = {pid: _verdict(vs, options.min_submitted) for pid, vs in votes.items()}
    out, dropped = [], []
    for row, pid in zip(rows, ids):
        status, for_chosen, for_rejected, majority = verdicts.get(pid) or ("unreviewed", [], [], [])
        reviewers = [d["user"] for d in for_chosen + for_rejected]
        if status == "tie" or (status == "unreviewed" and not options.keep_unreviewed):
            dropped.append({"pair_id": pid, "question_id": row.get("question_id"), "target": row.get("target"),
                            "reason": status, "votes_chosen": len(for_chosen), "votes_rejected": len(for_rejected),
                            "reviewers": sorted(reviewers)})  # fmt: skip
            continue
        row = dict(row)
        if status == "swapped":
            for a, b in PAIRED:
                if a in row and b in row:
                    row[a], row[b] = row[b], row[a]
            if row.get("margin") is not None:
                row["margin"] = -row["margin"]
            for_chosen, for_rejected = for_rejected, for_chosen
        ratings = [d["rating"] for d in majority if d.get("rating") is not None]
        row.update(
            pair_id=pid,
            review_status=status,
            votes_chosen=len(for_chosen),
            votes_rejected=len(for_rejected),
            reviewers=sorted(reviewers),
            rating=sum(ratings) / len(ratings) if ratings else None,
            comments=[d["comment"] for d in votes.get(pid, []) if d.get("comment")],
        )
        out.append(row)

    tally: dict[str, dict] = {}
    for pid, vs in sorted(votes.items()):  # once per pair, however many rows repeat it
        status, _, _, majority = verdicts[pid]
        for d in vs:
            t = tally.setdefault(d["user"], {"responses": 0, "agreed_with_judge": 0, "with_majority": 0,
                                             "in_ties": 0, "ratings": []})  # fmt: skip
            t["responses"] += 1
            t["agreed_with_judge"] += d["prefers"] == "chosen"
            t["with_majority"] += any(d is m for m in majority)
            t["in_ties"] += status == "tie"
            if d.get("rating") is not None:
                t["ratings"].append(d["rating"])
    reviewer_rows = [
        {"reviewer": user, **{k: v for k, v in t.items() if k != "ratings"},
         "mean_rating": sum(t["ratings"]) / len(t["ratings"]) if t["ratings"] else None}
        for user, t in sorted(tally.items())
    ]  # fmt: skip
    metrics = {"pairs": float(len(rows)), "responses": float(len(decisions or [])), "stale_responses": float(stale)}
    extras = {
        "reviewers": rows_dataset(reviewer_rows, OUTPUTS["reviewers"]),
        "dropped": rows_dataset(dropped, OUTPUTS["dropped"]),
    }
    return StageOutput(rows_dataset(out, features(pairs.features)), [], metrics, extras)


def pseudonym(decision: dict) -> str:
    """A stable name that does not say who reviewed: the first 8 hex digits of the sha256 of the user id."""
    import hashlib

    who = str(decision.get("user_id") or decision["user"])
    return "reviewer-" + hashlib.sha256(who.encode()).hexdigest()[:8]


def _verdict(votes: list[dict], min_submitted: int) -> tuple[str, list[dict], list[dict], list[dict]]:
    """(status, votes for the judge's chosen, votes for its rejected, the majority's votes) of one pair."""
    for_chosen = [d for d in votes if d["prefers"] == "chosen"]
    for_rejected = [d for d in votes if d["prefers"] == "rejected"]
    if len(votes) < min_submitted:
        return "unreviewed", for_chosen, for_rejected, []
    if len(for_chosen) == len(for_rejected):
        return "tie", for_chosen, for_rejected, []
    if len(for_chosen) > len(for_rejected):
        return "agreed", for_chosen, for_rejected, for_chosen
    return "swapped", for_chosen, for_rejected, for_rejected


# --- schemas ----------------------------------------------------------------------------------------------------
def features(pair_features: Any):
    """The pairs' own features, then the review's columns."""
    added = Columns(ADDED).features()
    clash = sorted(set(added) & set(pair_features))
    if clash:
        raise DataError(f"the pairs already have the column(s) {', '.join(clash)} (reviewed twice?)")
    from datasets import Features

    return Features({**pair_features, **added})


def reviewer_features():
    return OUTPUTS["reviewers"].features()


def dropped_features():
    return OUTPUTS["dropped"].features()


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts: Path) -> dict:
    """Counts by verdict, the judge's agreement with the reviewers, the decisions file, and per-reviewer counts."""
    from factory.fingerprint import sha256_file
    from factory.review.records import read_decisions

    kept = outputs["data"].select_columns(["review_status", "votes_chosen", "votes_rejected"]).to_pandas()
    dropped = outputs["dropped"].select_columns(["reason", "votes_chosen", "votes_rejected"]).to_pandas()
    counts = kept["review_status"].value_counts()
    agreed, swapped = int(counts.get("agreed", 0)), int(counts.get("swapped", 0))
    ties = int((dropped["reason"] == "tie").sum())
    unreviewed_dropped = int((dropped["reason"] == "unreviewed").sum())
    pending = _with_votes(kept[kept["review_status"] == "unreviewed"]) + _with_votes(
        dropped[dropped["reason"] == "unreviewed"]
    )
    path = options.responses.resolved if options.responses is not None else None
    exists = path is not None and path.is_file()
    reviewers = outputs["reviewers"].to_list()
    on_pairs = sum(r["responses"] for r in reviewers)
    return {
        "pairs": len(kept) + len(dropped),
        "kept": len(kept),
        "reviewed": agreed + swapped + ties,
        "agreed": agreed,
        "swapped": swapped,
        "ties_dropped": ties,
        "unreviewed": int(counts.get("unreviewed", 0)) + unreviewed_dropped,
        "unreviewed_dropped": unreviewed_dropped,
        "pending": pending,
        "judge_agreement": agreed / (agreed + swapped) if agreed + swapped else None,
        "min_submitted": options.min_submitted,
        "responses": on_pairs,
        "stale_responses": (len(read_decisions(path)) - on_pairs) if exists else 0,
        "responses_file": str(options.responses) if options.responses is not None else None,
        "responses_sha256": sha256_file(path) if exists else None,
        "reviewers": {
            r["reviewer"]: {k: r[k] for k in ("responses", "agreed_with_judge", "with_majority", "in_ties")}
            for r in reviewers
        },
    }


def _with_votes(df) -> int:
    """Pairs with some votes (fewer than a verdict needs)."""
    return int(((df["votes_chosen"] + df["votes_rejected"]) > 0).sum())
