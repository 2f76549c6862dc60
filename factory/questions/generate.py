"""Open questions written per topic by an LLM (the personality study's topic -> questions step), checked and
deduplicated as they arrive; the `questions` stage's `generate:` block runs `generate`.

A question is kept if it ends with '?', has 5-60 words, does not open like a yes/no question, and repeats no
question already known (shipped or generated, any topic; exact or near, see `factory.questions.sets.DuplicateIndex`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from factory.questions.sets import DuplicateIndex, _row

SOURCE = "generated"
MIN_WORDS, MAX_WORDS = 5, 60
# first words of questions answered with yes or no; "Would you rather A or B?" is a pick between options: also out
YES_NO_STARTS = frozenset(
    "is are am was were do does did can could will would have has had should shall may might must"
    " isn't aren't wasn't weren't don't doesn't didn't can't couldn't won't wouldn't haven't hasn't hadn't"
    " shouldn't".split()
)
AVOID_SHOWN = 20  # a topic's latest kept questions shown to later calls (bounds the prompt's length)
TOPIC_GROUP = 16  # topics asked together when batch_size is not set (the request cache's unit of resume)


def slugify(topic: str) -> str:
    """'Trust in others' -> 'trust-in-others': the topic's part of generated question ids."""
    return re.sub(r"[^a-z0-9]+", "-", topic.casefold()).strip("-")


def clean_question(text: str) -> str:
    """Whitespace collapsed and a leading list marker ('1.', '2)', '-') removed: models number items in strings."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"^(?:\d{1,3}[.)]|[-*\u2022])\s+", "", text)


def check_question(text: str) -> str | None:
    """Why `text` is not a usable open question, or None: it must end with '?', have 5-60 words and not open like
    a yes/no question."""
    words = text.split()
    if not text.endswith("?"):
        return "does not end with '?'"
    if len(words) < MIN_WORDS:
        return f"fewer than {MIN_WORDS} words"
    if len(words) > MAX_WORDS:
        return f"more than {MAX_WORDS} words"
    first = re.sub(r"^\W+", "", words[0].replace("\u2019", "'")).casefold()
    if first in YES_NO_STARTS:
        return "yes/no question"
    return None


def question_schema(n: int, strict: bool = True) -> dict[str, Any]:
    """The JSON asked for: exactly `n` question strings of 10-400 characters (the grammar makes the model write
    that). Answers are parsed against the lenient form (1 to `n` strings of any length), so that one bad item of a
    backend without grammars costs that item, with its reason, not the whole call."""
    item = {"type": "string", "minLength": 10, "maxLength": 400} if strict else {"type": "string"}
    questions = {"type": "array", "items": item, "minItems": n if strict else 1, "maxItems": n}
    return {
        "type": "object",
        "properties": {"questions": questions},
        "required": ["questions"],
        "additionalProperties": False,
    }


class QuestionPool:
    """Generated questions, checked and deduplicated as they arrive: a question that fails `check_question` or
    repeats anything already in the pool (`known` questions included, any topic) becomes a failure with its
    reason; the rest are kept, numbered per topic in order of arrival."""

    def __init__(self, threshold: float, known: Iterable[tuple[str, str]] = ()):
        self.index = DuplicateIndex(threshold)
        for qid, text in known:
            self.index.add(qid, text)
        self.kept: dict[str, list[dict]] = {}
        self.failures: list[dict] = []
        self.counts = {"returned": 0, "rejected": 0, "duplicates_exact": 0, "duplicates_near": 0, "kept": 0}

    def offer(self, topic: str, texts: list[str], call: int) -> list[str]:
        """Check and add one answer's questions; returns the ids of those kept."""
        kept = self.kept.setdefault(topic, [])
        ids = []
        for text in texts:
            self.counts["returned"] += 1
            text = clean_question(text)
            record = {"topic": topic, "call": call, "question": text}
            reason = check_question(text)
            if reason is not None:
                self.counts["rejected"] += 1
                self.failures.append({"reason": reason, **record})
                continue
            match = self.index.match(text)
            if match is not None:
                kind, other, similarity = match
                self.counts[f"duplicates_{kind}"] += 1
                prefix = "duplicate" if kind == "exact" else "near-duplicate"
                self.failures.append({"reason": f"{prefix} of {other}", **record, "similarity": round(similarity, 4)})
                continue
            row = _row(SOURCE, f"{slugify(topic)}/{len(kept) + 1}", topic, text, [])
            kept.append(row)
            self.index.add(row["question_id"], text)
            self.counts["kept"] += 1
            ids.append(row["question_id"])
        return ids


def generate(
    g: Any, known_rows: list[dict], client: Any, seed: int, group: int = TOPIC_GROUP
) -> tuple[list[dict], list[dict], dict]:
    """Ask `client` (a backend) per topic until `per_topic` questions are kept or `max_calls` are spent, `group`
    topics per request batch; rows in topic order, failures with reasons, metrics (`generate.*`). `g` is the
    questions stage's `generate:` block; `seed` the stage seed, from which each call's seed is derived (with the
    topic and the call index). The caller owns the client (opens it, counts its calls, closes its cache)."""
    from factory.llm.structured import generate_validated, json_parser
    from factory.llm.types import Constraint, GenerationRequest, Sampling
    from factory.prompts import builtin, render
    from factory.seeds import derive_seed

    topics = g.topic_list()
    system = render(builtin("questions/system.jinja"))
    template = builtin("questions/generate.jinja")
    pool = QuestionPool(g.near_duplicate_threshold, ((r["question_id"], r["text"]) for r in known_rows))
    calls = dict.fromkeys(topics, 0)
    metrics = {"tokens_in": 0.0, "tokens_out": 0.0, "retries": 0.0, "calls": 0.0, "calls_failed": 0.0}

    def request(topic: str, n: int) -> GenerationRequest:
        avoid = [r["text"] for r in pool.kept.get(topic, [])][-AVOID_SHOWN:]
        call_seed = derive_seed(seed, "generate", topic, calls[topic]) % (2**31)
        sampling = Sampling(g.temperature, g.top_p, g.max_tokens or 70 * n + 30, (), call_seed)
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": render(template, topic=topic, n=n, avoid=avoid)},
        ]
        return GenerationRequest.chat(messages, sampling, Constraint.schema(question_schema(n)))

    def wanted(topic: str) -> int:
        return g.per_topic - len(pool.kept.get(topic, []))

    while pending := [t for t in topics if wanted(t) > 0 and calls[t] < g.calls_allowed()]:
        for start in range(0, len(pending), group):
            chunk = pending[start : start + group]
            answers: dict[str, Any] = {}
            by_n: dict[int, list[str]] = {}
            for topic in chunk:  # answers are validated against their own count: one call per count asked
                by_n.setdefault(min(g.per_call, wanted(topic)), []).append(topic)
            for n, ts in by_n.items():
                reqs = [request(t, n) for t in ts]
                answers.update(
                    zip(
                        ts,
                        generate_validated(client, reqs, json_parser(question_schema(n, strict=False)), g.max_retries),
                    )
                )
            for topic in chunk:  # in topic order, whatever the grouping: the same questions are kept
                v = answers[topic]
                metrics["calls"] += 1
                metrics["tokens_in"] += v.tokens_in
                metrics["tokens_out"] += v.tokens_out
                metrics["retries"] += v.attempts - 1
                if v.ok:
                    pool.offer(topic, v.value["questions"], calls[topic])
                else:
                    metrics["calls_failed"] += 1
                    pool.failures.append(
                        {
                            "reason": v.reason,
                            "topic": topic,
                            "call": calls[topic],
                            "raw": v.result.text,
                            "attempts": v.attempts,
                        }
                    )
                calls[topic] += 1
    shortfall = 0
    for topic in topics:
        if wanted(topic) > 0:
            shortfall += wanted(topic)
            pool.failures.append(
                {
                    "reason": "topic short of per_topic after max_calls",
                    "topic": topic,
                    "kept": len(pool.kept.get(topic, [])),
                    "wanted": g.per_topic,
                    "calls": calls[topic],
                }
            )
    metrics.update({k: float(v) for k, v in pool.counts.items()})
    metrics["shortfall"] = float(shortfall)
    out = {f"generate.{k}": v for k, v in metrics.items()}
    rows = [row for topic in topics for row in pool.kept.get(topic, [])]
    return rows, pool.failures, out
