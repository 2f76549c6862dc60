"""Load question sets (shipped or user files) into one typed question table; select by set, topic, id or sample.

Inputs: none.
Output (one row per question), columns and types as in `factory.questionsets.features()`:
    question_id (str, unique), source, source_id, topic, text, kind ('choice' | 'open'),
    options (list[str], ordered), ordinal (list[float | null]), refusal_index (int | null),
    human_distribution (list[float] | null), human_n (int | null),
    human_groups (list[{attribute, group, counts: list[float]}] | null)

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
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from factory.errors import DataError, did_you_mean
from factory.options import DataFile, StageOptions
from factory.questionsets import SETS, features, load_file, load_set, normalize
from factory.stage import StageContext, StageOutput

VERSION = 1
INPUTS = (0, 0)


def _known_set(name: str) -> str:
    if name not in SETS:
        raise ValueError(f"unknown question set '{name}'{did_you_mean(name, SETS)}; known: {', '.join(SETS)}")
    return name


SetName = Annotated[str, AfterValidator(_known_set)]


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

    @field_validator("sets")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a set twice")
        return value

    @model_validator(mode="after")
    def _something(self) -> Options:
        if not self.sets and not self.files:
            raise ValueError("name at least one question set (sets: [...]) or file (files: [...])")
        return self


def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    from datasets import Dataset

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
    if not rows:
        raise DataError(f"stages.{ctx.stage}: the selection matches no question")

    data = Dataset.from_list(rows, features=features())
    return StageOutput(data, metrics={"loaded": loaded, "duplicates_removed": duplicates, "selected": len(rows)})


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
