"""Question table from shipped sets, user files or LLM generation per topic; select by set, topic, id or sample.

Input roles: none (a source stage: shipped sets, user files or a model; a recipe gives it no `inputs:`).
Output `data` (one row per question; declared by `outputs(options)`, built by `factory.questions.sets.features()`):
    question_id (str, unique), source, source_id, topic, text (str), kind (str: 'choice' | 'open'),
    options (list[str], ordered), ordinal (list[float32 | null]), refusal_index (int32 | null),
    human_distribution (list[float64] | null), human_n (int64 | null),
    human_groups (list[{attribute, group, counts: list[float64]}] | null)
    with `held_out:` or `generate:`, one more column: split (str: 'train' | 'held_out')
Failures (with `generate:` only): rejected and duplicate questions, invalid calls, topics left short.

Example:
    stages:
      questions:
        uses: questions
        sets: [election, opinionqa]
        with_human_distribution: true   # only questions with Pew answer distributions (OpinionQA's 684)
        sample: 50                      # seeded: the same recipe seed gives the same 50

Your own survey as ground truth: `human_answers: [answers.csv]` attaches answer distributions, overall and by Pew-like
group, to the questions of `files:` (a long CSV, `factory/questions/survey.py`), and `evaluate` scores alignment
against them as it does for OpinionQA.

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
`factory.questions.sets.DuplicateIndex`). Everything else is kept in `failures` with its reason ("yes/no question",
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
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from factory.errors import DataError, did_you_mean
from factory.options import BackendRef, DataFile, OptionBlock, StageOptions
from factory.questions.generate import SOURCE, TOPIC_GROUP, generate, slugify
from factory.questions.sets import COLUMNS, SETS, deduplicate, features, load_file, load_set
from factory.stage import Columns, StageContext, StageOutput

VERSION = 1
INPUTS: dict = {}  # a source stage: shipped sets, user files or a model
PROMPTS = ["questions/system.jinja", "questions/generate.jinja"]


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
    human_answers: list[DataFile] | None = Field(
        None,
        description="your survey's answer distributions for the questions of `files:`, overall and by group: long"
        " CSVs of question_id,attribute,group,option,share (or count); see factory/questions/survey.py",
        json_schema_extra={"fingerprint": "omit_if_none"},
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


def outputs(options: Options) -> dict[str, Columns]:
    """The question table; with `held_out:` or `generate:`, a `split` column ('train' | 'held_out') after it."""
    split = options.held_out is not None or options.generate is not None
    return {"data": Columns({**COLUMNS, **({"split": "string"} if split else {})})}


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
    with ctx.llm(options.generate.backend) as client:
        made, failures, gen_metrics = generate(
            options.generate, rows, client, ctx.seed, options.batch_size or TOPIC_GROUP
        )
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
    for path in options.human_answers or []:
        from factory.questions.survey import attach

        if not attach(path.resolved, [r for r in rows if r["source"] not in options.sets]):
            raise DataError(f"{path}: no rows")

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


def held_out(n: int, share: float, ctx: StageContext) -> set[int]:
    """Seeded positions (of `n` generated questions) for the held-out split: `share` of them, rounded."""
    k = math.floor(share * n + 0.5)
    return set(ctx.rng("held_out").permutation(n)[:k].tolist()) if k else set()
