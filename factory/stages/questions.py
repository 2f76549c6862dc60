"""Question table from shipped sets, user files or LLM generation per topic; select by set, topic, id or sample.

Inputs: none.
Output (one row per question), columns and types as in `factory.questionsets.features()`:
    question_id (str, unique), source, source_id, topic, text, kind ('choice' | 'open'),
    options (list[str], ordered), ordinal (list[float | null]), refusal_index (int | null),
    human_distribution (list[float] | null), human_n (int | null),
    human_groups (list[{attribute, group, counts: list[float]}] | null)
    with `generate:` only, one more column: split ('train' | 'held_out')

Example:
    stages:
      questions:
        uses: questions
        sets: [election, opinionqa]
        with_human_distribution: true   # only questions with Pew answer distributions (OpinionQA's 684)
        sample: 50                      # seeded: the same recipe seed gives the same 50

Selection happens in this order: load sets and files -> drop duplicates -> filter by topics / ids / human data
-> seeded sample. Duplicates are the same normalised text with the same options. A question that carries human
answer data is never dropped (OpinionQA asks some questions in two waves: separate measurements); of a group
without any, the first is kept. So the personality set's 20,000 rows give 12,640 questions and OpinionQA's
1,494 give 1,489 (all 684 with human data kept); `dedup: false` keeps every row.

Generated questions (`generate:`, the personality study's topic -> questions step): an LLM writes open questions
per topic, as JSON constrained by a schema, `per_call` at a time, each call with its own seed (from the stage seed,
the topic and the call index), until `per_topic` questions are kept or the topic has had `max_calls` calls. A
question is kept if it ends with '?', has 5-60 words, does not open like a yes/no question (Is, Do, Can, Would,
Have...), and repeats no question already in the table (shipped or generated, any topic): neither its normalised
text (exact) nor, at `near_duplicate_threshold` or above, its word 1-2-gram Jaccard similarity (near; see
`factory.questionsets.DuplicateIndex`). Everything else is kept in `failures` with its reason ("yes/no question",
"duplicate of generated/trust-in-others/3", "near-duplicate of ...", calls that failed validation, and each topic
short of `per_topic`); counts are in the manifest's metrics. Later calls show the model the topic's latest
questions kept (up to 20), to avoid. Rows: source 'generated', kind 'open', no options, question_id
`generated/<topic-slug>/<k>`, in topic order. A seeded `held_out` share of the generated questions gets split
'held_out' (shipped and file questions are 'train'); deduplication comes first, so no near duplicate straddles
the split.

    stages:
      questions:
        uses: questions
        generate:
          backend: small              # a backend named under `backends:`
          topics: [Trust in others, Reaction to criticism]   # or personality_200: the study's 200 topics
          per_topic: 10
          held_out: 0.2

Generation runs as one batch, not one per topic: removing near duplicates across topics needs every topic's
questions, and the runner has no step after the batches that may change rows. Resume comes from the request cache
(`requests.sqlite` in the stage's work folder) instead: topics are asked in groups of `batch_size` (default 16),
every answer is stored as its group finishes, and a killed build asks the model again only for unanswered groups.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from factory.errors import DataError, did_you_mean
from factory.options import BackendRef, DataFile, StageOptions
from factory.options import Options as OptionBlock
from factory.questionsets import SETS, DuplicateIndex, _row, features, load_file, load_set, normalize
from factory.stage import Columns, StageContext, StageOutput

VERSION = 1
INPUTS: dict = {}  # a source stage: shipped sets, user files or a model
OUTPUTS = {
    "data": Columns(
        {
            "question_id": "string",
            "source": "string",
            "source_id": "string",
            "topic": "string",
            "text": "string",
            "kind": "string",
            "options": "list<string>",
            "ordinal": "list<float32>",
            "refusal_index": "int32",
            "human_distribution": "list<float64>",
            "human_n": "int64",
            "human_groups": "any",  # list of {attribute, group, counts}
        }
    )
}
PROMPTS = ["questions/system.jinja", "questions/generate.jinja"]
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


def _known_set(name: str) -> str:
    if name not in SETS:
        raise ValueError(f"unknown question set '{name}'{did_you_mean(name, SETS)}; known: {', '.join(SETS)}")
    return name


SetName = Annotated[str, AfterValidator(_known_set)]


class Generate(OptionBlock):
    backend: BackendRef = Field(..., description="a backend named under `backends:`")
    topics: list[str] | Literal["personality_200"] = Field(
        ..., description="topics to write questions on, or personality_200: the personality study's 200 topics"
    )
    per_topic: int = Field(10, ge=1, le=1000, description="questions kept per topic (the study asked 100)")
    per_call: int = Field(10, ge=1, le=100, description="questions asked of one call")
    max_calls: int | None = Field(
        None, ge=1, description="calls per topic before it is left short; default 3 x ceil(per_topic / per_call)"
    )
    temperature: float = Field(0.8, ge=0, le=2)
    top_p: float = Field(0.9, gt=0, le=1)
    max_tokens: int | None = Field(
        None, ge=16, le=32768, description="per call; default 70 per question asked + 30; longer is a failure"
    )
    max_retries: int = Field(2, ge=0, le=10, description="re-asks of a call whose JSON is invalid, fresh seed each")
    near_duplicate_threshold: float = Field(
        0.8, gt=0, le=1, description="word 1-2-gram Jaccard similarity from which a question repeats another"
    )
    held_out: float = Field(0.2, ge=0, lt=1, description="seeded share of generated questions in split 'held_out'")

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, str):
            return value
        if not value:
            raise ValueError("name at least one topic")
        value = [t.strip() for t in value]
        slugs: dict[str, str] = {}
        for topic in value:
            slug = slugify(topic)
            if not slug:
                raise ValueError(f"topic '{topic}' has no letters or digits")
            if slug in slugs:
                raise ValueError(f"topics '{slugs[slug]}' and '{topic}' are the same topic")
            slugs[slug] = topic
        return value

    @model_validator(mode="after")
    def _calls(self) -> Generate:
        needed = math.ceil(self.per_topic / self.per_call)
        if self.max_calls is not None and self.max_calls < needed:
            raise ValueError(
                f"max_calls {self.max_calls} cannot collect per_topic {self.per_topic} at per_call {self.per_call}"
                f" (needs at least {needed})"
            )
        return self

    def calls_allowed(self) -> int:
        return self.max_calls or 3 * math.ceil(self.per_topic / self.per_call)

    def topic_list(self) -> list[str]:
        if isinstance(self.topics, list):
            return self.topics
        from factory.resources import data_path

        return [t for t in data_path("questions", "personality_topics_200.txt").read_text().splitlines() if t]


class Options(StageOptions):
    sets: list[SetName] = Field(default_factory=list, description=f"shipped sets: {', '.join(SETS)}")
    files: list[DataFile] = Field(
        default_factory=list,
        description="user question files: .json in the studies' context.json shape, or .csv with topic,question"
        " (optional id, options as 'A|B|C'); paths relative to the recipe",
    )
    topics: list[str] | None = Field(None, description="keep questions whose topic is one of these (case-insensitive)")
    ids: list[str] | None = Field(None, description="keep these question ids ('opinionqa/GUN_W26' or 'GUN_W26')")
    with_human_distribution: bool = Field(False, description="keep only questions with human answer distributions")
    dedup: bool = Field(True, description="drop repeated questions (same normalised text and options)")
    sample: int | None = Field(None, ge=1, description="seeded random sample of this many questions (after filters)")
    held_out: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="seeded share of the selected (shipped or file) questions put in split 'held_out', e.g. to judge"
        " calibration on questions it never saw; adds the `split` column",
        json_schema_extra={"fingerprint": "omit_if_none"},
    )
    generate: Generate | None = Field(
        None,
        description="write open questions per topic with an LLM, appended after the selection (None: none)",
        # asks semantic_dump to leave the field out while None, so recipes without it keep their fingerprints;
        # needs that support in factory/options.py
        json_schema_extra={"fingerprint": "omit_if_none"},
    )

    @field_validator("sets")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a set twice")
        return value

    @model_validator(mode="after")
    def _something(self) -> Options:
        if not self.sets and not self.files and self.generate is None:
            raise ValueError("name at least one question set (sets: [...]), file (files: [...]) or generate: block")
        return self


def files(options: Options) -> list[Path]:
    """Built-in prompts, when generating: their bytes enter the fingerprint like any file the recipe names."""
    from factory.prompts import builtin

    return [builtin(p) for p in PROMPTS] if options.generate is not None else []


def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    from datasets import Dataset, Value

    rows, metrics = select(options, ctx)
    if options.held_out is not None:  # drawn over the selection only: generated questions have their own share
        picked = set(ctx.rng("held_out_selected").permutation(len(rows))[: round(options.held_out * len(rows))])
        for i, row in enumerate(rows):
            row["split"] = "held_out" if i in picked else "train"
        metrics["held_out"] = float(len(picked))
    if options.generate is None:
        schema = features()
        if options.held_out is not None:
            schema["split"] = Value("string")
        return StageOutput(Dataset.from_list(rows, features=schema), metrics=metrics)

    if any(r["source"] == SOURCE for r in rows):
        raise DataError(f"stages.{ctx.stage}.files: a file named '{SOURCE}' clashes with generated questions' ids")
    made, failures, gen_metrics = generate(options.generate, rows, ctx, options.batch_size or TOPIC_GROUP)
    metrics.update(gen_metrics)
    held = held_out(len(made), options.generate.held_out, ctx)
    metrics["generate.held_out"] = float(len(held))
    for row in rows:
        row.setdefault("split", "train")
    for i, row in enumerate(made):
        row["split"] = "held_out" if i in held else "train"
    rows += made
    schema = features()
    schema["split"] = Value("string")
    data = Dataset.from_list(rows, features=schema) if rows else Dataset.from_dict({k: [] for k in schema}, schema)
    return StageOutput(data, failures, metrics)


def select(options: Options, ctx: StageContext) -> tuple[list[dict], dict[str, float]]:
    """The shipped sets and files, deduplicated, filtered and sampled (no rows when none are named)."""
    rows: list[dict] = []
    for name in options.sets:
        rows += load_set(name)
    for path in options.files:
        rows += load_file(path.resolved, path.resolved.stem)
    loaded = len(rows)

    seen_ids: set[str] = set()
    for row in rows:
        if row["question_id"] in seen_ids:
            raise DataError(f"question id '{row['question_id']}' appears twice (give each question a unique id)")
        seen_ids.add(row["question_id"])

    duplicates = 0
    if options.dedup:
        rows, duplicates = deduplicate(rows)

    if options.topics is not None:
        wanted = {t.casefold(): t for t in options.topics}
        have = {r["topic"].casefold() for r in rows}
        for folded, topic in wanted.items():
            if folded not in have:
                raise DataError(
                    f"stages.{ctx.stage}.topics: '{topic}' matches no question"
                    f"{did_you_mean(topic, sorted({r['topic'] for r in rows}))}"
                )
        rows = [r for r in rows if r["topic"].casefold() in wanted]
    if options.ids is not None:
        full = {r["question_id"]: r for r in rows}
        bare: dict[str, list[str]] = {}
        for r in rows:
            bare.setdefault(r["source_id"], []).append(r["question_id"])
        chosen = []
        for qid in options.ids:
            if qid in full:
                chosen.append(qid)
            elif len(bare.get(qid, [])) == 1:
                chosen.append(bare[qid][0])
            elif qid in bare:
                raise DataError(f"stages.{ctx.stage}.ids: '{qid}' is ambiguous: {', '.join(bare[qid])}")
            else:
                raise DataError(f"stages.{ctx.stage}.ids: no question '{qid}'{did_you_mean(qid, list(full))}")
        keep_ids = set(chosen)
        rows = [r for r in rows if r["question_id"] in keep_ids]
    if options.with_human_distribution:
        rows = [r for r in rows if r["human_distribution"] is not None]

    if options.sample is not None:
        if options.sample > len(rows):
            raise DataError(
                f"stages.{ctx.stage}.sample: {options.sample} requested but only {len(rows)} questions"
                " match the selection"
            )
        picked = ctx.rng("sample").choice(len(rows), size=options.sample, replace=False)
        rows = [rows[i] for i in sorted(picked.tolist())]
    if not rows and (options.sets or options.files):
        raise DataError(f"stages.{ctx.stage}: the selection matches no question")
    return rows, {"loaded": loaded, "duplicates_removed": duplicates, "selected": len(rows)}


def deduplicate(rows: list[dict]) -> tuple[list[dict], int]:
    """Drop repeated questions, keeping every one with human data and otherwise the first of each group."""
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        key = (normalize(row["text"]), tuple(o.casefold() for o in row["options"]))
        groups.setdefault(key, []).append(i)
    keep: set[int] = set()
    for members in groups.values():
        measured = [i for i in members if rows[i]["human_distribution"] is not None]
        keep.update(measured or members[:1])
    return [r for i, r in enumerate(rows) if i in keep], len(rows) - len(keep)


# --- generation ---------------------------------------------------------------------------------------------------


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
    g: Generate, known_rows: list[dict], ctx: StageContext, group: int = TOPIC_GROUP
) -> tuple[list[dict], list[dict], dict]:
    """Ask the model per topic until `per_topic` questions are kept or `max_calls` are spent, `group` topics per
    request batch; rows in topic order, failures with reasons, metrics."""
    from factory.llm import backend
    from factory.llm.structured import generate_validated, json_parser
    from factory.llm.types import Constraint, GenerationRequest, Sampling
    from factory.prompts import builtin, render
    from factory.seeds import derive_seed

    topics = g.topic_list()
    client = backend.for_stage(ctx, g.backend)
    system = render(builtin("questions/system.jinja"))
    template = builtin("questions/generate.jinja")
    pool = QuestionPool(g.near_duplicate_threshold, ((r["question_id"], r["text"]) for r in known_rows))
    calls = dict.fromkeys(topics, 0)
    metrics = {"tokens_in": 0.0, "tokens_out": 0.0, "retries": 0.0, "calls": 0.0, "calls_failed": 0.0}

    def request(topic: str, n: int) -> GenerationRequest:
        avoid = [r["text"] for r in pool.kept.get(topic, [])][-AVOID_SHOWN:]
        seed = derive_seed(ctx.seed, "generate", topic, calls[topic]) % (2**31)
        sampling = Sampling(g.temperature, g.top_p, g.max_tokens or 70 * n + 30, (), seed)
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
    out["backend_calls"] = float(client.calls)
    out["requests_cached"] = float(client.cache.hits if client.cache else 0)
    if client.cache is not None:
        client.cache.close()
    rows = [row for topic in topics for row in pool.kept.get(topic, [])]
    return rows, pool.failures, out


def held_out(n: int, share: float, ctx: StageContext) -> set[int]:
    """Seeded positions (of `n` generated questions) for the held-out split: `share` of them, rounded."""
    k = math.floor(share * n + 0.5)
    return set(ctx.rng("held_out").permutation(n)[:k].tolist()) if k else set()
