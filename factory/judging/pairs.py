"""The pair rules, deduplication and the train/test split: pure functions on plain rows (no model, no dataset).

Judge rule (the personality study's `answer_to_datasets.py`, per question and target T):
    chosen   = the answer most similar to T among answers of people whose target is T (style meta);
    rejected = the answer least similar to T among the base answers and the answers of people with another
               target, every candidate scored against T (the same answer can be rejected for one target and
               chosen for its own);
    kept when margin = sim(chosen) - sim(rejected) >= min_margin. Ties go to the first candidate in
    (style, person_id, sample) order, so the result never depends on input order.
Opinion rule (per person and question): the person's subgroup's real answer distribution decides;
    chosen   = the option with the largest subgroup share (never the refusal);
    rejected = the person's simulated choice, kept when its share is lower by at least min_margin.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Candidate:
    """A judged free-text answer."""

    person_id: str
    question_id: str
    sample: int
    style: str  # 'meta' (the person's own traits) or 'base' (no persona)
    target: str | None  # the answering person's target; None for base answers
    scores: tuple[float, ...]  # judged O, C, E, A, N
    text: str


def judge_pairs(
    candidates: Sequence[Candidate],
    vectors: dict[str, Sequence[float]],
    kind: str = "exp_mse",
    alpha: float = 5.0,
    min_margin: float = 0.0,
) -> tuple[list[dict], list[dict]]:
    """(pairs, dropped); similarity `kind` as in `factory.judging.targets.similarity_matrix`. See the module doc."""
    from factory.judging.targets import similarity_matrix

    by_q: dict[str, list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: (c.question_id, c.style, c.person_id, c.sample)):
        by_q.setdefault(c.question_id, []).append(c)
    pairs, dropped = [], []
    for qid, cands in by_q.items():
        meta = np.array([c.style == "meta" for c in cands])
        base = np.array([c.style == "base" for c in cands])
        owner = np.array([c.target or "" for c in cands], dtype=object)
        targets = sorted({c.target for c in cands if c.style == "meta" and c.target is not None})
        sims = similarity_matrix([vectors[t] for t in targets], [c.scores for c in cands], kind, alpha)
        for t, sim in zip(targets, sims):
            own = np.flatnonzero(meta & (owner == t))
            rivals = np.flatnonzero(base | (meta & (owner != t)))
            if not len(rivals):
                dropped.append({"question_id": qid, "target": t, "reason": "no rejected candidate", "margin": None})
                continue
            best = own[np.argmax(sim[own])]  # argmax/argmin: the first of equal extremes
            worst = rivals[np.argmin(sim[rivals])]
            margin = float(sim[best] - sim[worst])
            if margin < min_margin:
                dropped.append({"question_id": qid, "target": t, "reason": "margin", "margin": margin})
                continue
            pairs.append(
                {
                    "question_id": qid,
                    "target": t,
                    "target_vector": list(vectors[t]),
                    "chosen": cands[best],
                    "rejected": cands[worst],
                    "chosen_score": float(sim[best]),
                    "rejected_score": float(sim[worst]),
                    "margin": margin,
                }
            )
    return pairs, dropped


def group_shares(human_groups: list[dict] | None, attribute: str) -> dict[str, list[float]]:
    """group -> answer shares over the question's options, for one attribute of a question's `human_groups`."""
    out = {}
    for g in human_groups or []:
        if g["attribute"] == attribute:
            counts = np.asarray(g["counts"], dtype=np.float64)
            if counts.sum() > 0:
                out[g["group"]] = [float(x) for x in counts / counts.sum()]
    return out


def opinion_pair(
    choice: int, group: str | None, shares: dict[str, list[float]], refusal_index: int | None, min_margin: float
) -> tuple[dict | None, str | None]:
    """(pair, None) or (None, why there is none) for one simulated choice; see the module doc."""
    if group is None:
        return None, "person in no group"
    if group not in shares:
        return None, "no human answers for the group"
    dist = shares[group]
    eligible = [i for i in range(len(dist)) if i != refusal_index]
    top = max(eligible, key=lambda i: dist[i])  # the first of equal maxima
    if choice == top:
        return None, "choice is the group's top answer"
    margin = dist[top] - dist[choice]
    if margin < min_margin:
        return None, "margin"
    return {"chosen": top, "rejected": choice, "chosen_score": dist[top], "rejected_score": dist[choice],
            "margin": margin, "target_vector": dist}, None  # fmt: skip


def dedup(pairs: list[dict], key: Callable[[dict], Hashable]) -> tuple[list[dict], list[dict]]:
    """(kept, duplicates): of pairs with the same key, the first is kept."""
    seen: set = set()
    kept, dupes = [], []
    for p in pairs:
        k = key(p)
        (dupes if k in seen else kept).append(p)
        seen.add(k)
    return kept, dupes


def near_duplicate_groups(items: Sequence[tuple[str, str]], threshold: float) -> dict[str, str]:
    """question_id -> the id of its group's first question, for (question_id, text) items.

    A question joins the group of the earlier question it repeats: the same normalised text, or word 1-2-gram
    Jaccard similarity >= threshold (`factory.questions.sets.DuplicateIndex`, its best match). Single link: a chain
    of near duplicates is one group. Items are taken in question_id order, so the groups never depend on input
    order."""
    from factory.questions.sets import DuplicateIndex

    index = DuplicateIndex(threshold)
    root: dict[str, str] = {}
    for qid, text in sorted(items):
        hit = index.match(text)
        root[qid] = root[hit[1]] if hit else qid
        index.add(qid, text)
    return root


def pick_test_questions(groups: dict[str, str], share: float, rng: np.random.Generator) -> set[str]:
    """Question ids of the test split: whole groups in a seeded order until `share` of the questions are in."""
    if share <= 0 or not groups:
        return set()
    members: dict[str, list[str]] = {}
    for qid, root in sorted(groups.items()):
        members.setdefault(root, []).append(qid)
    roots = sorted(members)
    want = round(share * len(groups))
    test: set[str] = set()
    for i in rng.permutation(len(roots)):
        if len(test) >= want:
            break
        test.update(members[roots[int(i)]])
    return test
