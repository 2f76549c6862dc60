"""Write personas from meta personas with an LLM, in several styles, and measure how far each style drifts.

Input role: `people` (a meta-persona dataset, full or paper mode: `person_id` and the census facts a persona is
written from).
Output `data` (one row per person x style):
    person_id (str), style (str), persona (str: JSON text for table and reflective styles, prose for descriptive),
    model (str), seed (int64), attempts (int32), finish_reason (str), prompt_tokens (int32),
    completion_tokens (int32), polarity (float32), subjectivity (float32)
Extra output `drift` (one row per person x style x restated field):
    person_id, style, field, stated, expected (str), contradicted (bool)
Failures (kept with their reason: invalid JSON, schema violations, truncation, empty text): person_id, style, raw.
Plots: artifacts/drift.png; summary per style in the manifest (contradiction shares, text measures, distinct-n).

Styles: objective_table (census fields as a JSON table), subjective_table (plus job, personality, lifestyle,
religion, ideology and party), descriptive (a short portrait in prose), reflective (the personality study's
multi-turn conversation: reflection turns, then a JSON profile against a schema), or your own template. Seeds
come from the stage seed, the person and the style (and the turn), never reused across states or styles.

Example:
    stages:
      personas:
        uses: personas
        inputs: [people]
        backend: small
        styles: [objective_table, subjective_table, descriptive, reflective]
        sample: 24
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from factory.errors import DataError, did_you_mean
from factory.options import BackendRef, DataFile, OptionBlock, StageOptions
from factory.personas import styles as style_defs
from factory.stage import Columns, Needs, StageContext, StageOutput, rows_dataset

VERSION = 2  # 2: descriptive answers capped at 4 tokens a word asked
DESCRIPTIVE_TOKENS_PER_WORD = 4  # a descriptive persona's token limit per word asked (~3x the length asked)
INPUTS = {"people": Needs("person_id", description="meta personas (full or paper mode): the facts written up")}
OUTPUTS = {
    "data": Columns(
        {
            "person_id": "string",
            "style": "string",
            "persona": "string",
            "model": "string",
            "seed": "int64",
            "attempts": "int32",
            "finish_reason": "string",
            "prompt_tokens": "int32",
            "completion_tokens": "int32",
            "polarity": "float32",
            "subjectivity": "float32",
        }
    ),
    "drift": Columns(
        {
            "person_id": "string",
            "style": "string",
            "field": "string",
            "stated": "string",
            "expected": "string",
            "contradicted": "bool",
        }
    ),
}
PROMPTS = [
    "personas/system.jinja",
    "personas/objective_table.jinja",
    "personas/subjective_table.jinja",
    "personas/descriptive.jinja",
    "personas/reflective_turn.jinja",
    "personas/reflective_final.jinja",
]


class CustomStyle(OptionBlock):
    template: DataFile = Field(..., description="Jinja prompt; gets `facts` (the meta persona)")
    schema_file: DataFile | None = Field(None, description="JSON schema the answer must satisfy (else free text)")
    max_tokens: int = Field(300, ge=1, le=8192)


class Options(StageOptions):
    backend: BackendRef = Field(..., description="a backend named under `backends:`")
    styles: list[str] = Field(
        default_factory=lambda: list(style_defs.STYLES),
        description=f"built-in ({', '.join(style_defs.STYLES)}) or keys of `templates`",
    )
    templates: dict[str, CustomStyle] = Field(default_factory=dict, description="your own styles")
    sample: int | None = Field(None, ge=1, description="seeded sample of this many meta personas (default all)")
    temperature: float = Field(0.8, ge=0, le=2, description="the study used 0.8")
    top_p: float = Field(0.9, gt=0, le=1, description="the study used 0.9")
    max_tokens: int = Field(400, ge=16, le=8192, description="per answer; longer answers are failures")
    descriptive_words: int = Field(
        120, ge=10, le=2000,
        description="length asked of descriptive personas; one over 4 tokens a word (or max_tokens) is truncated",
    )  # fmt: skip
    reflection_turns: int = Field(2, ge=1, le=8, description="reflective style: turns before the profile")
    max_retries: int = Field(2, ge=0, le=10, description="re-asks with a fresh seed before a row is a failure")

    @field_validator("styles")
    @classmethod
    def _styles(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one style")
        return value

    def model_post_init(self, _context: Any) -> None:
        for name in self.templates:  # a built-in style's name picks the built-in prompt: the template would be unread
            if name in style_defs.STYLES:
                raise ValueError(f"templates.{name}: '{name}' is a built-in style; give your template another name")
        for s in self.styles:
            if s not in style_defs.STYLES and s not in self.templates:
                raise ValueError(f"unknown style '{s}'{did_you_mean(s, [*style_defs.STYLES, *self.templates])}")


def files(options: Options) -> list[Path]:
    """Built-in prompt files: their bytes enter the fingerprint like any file the recipe names."""
    from factory.prompts import builtin

    return [builtin(p) for p in PROMPTS]


def plan(options: Options, inputs: dict, ctx: StageContext) -> list[list[int]]:
    n = len(inputs["people"])
    rows = list(range(n))
    if options.sample is not None:
        if options.sample > n:
            raise DataError(f"stages.{ctx.stage}.sample: {options.sample} requested but the input has {n} persons")
        rows = sorted(ctx.rng("sample").choice(n, size=options.sample, replace=False).tolist())
    # Persons per checkpointed batch. Each answer is also cached as it finishes, so a kill loses little either way;
    # a large batch keeps the backend's slots full (every style, retry and reflective turn of 64 people at once).
    size = options.batch_size or 64
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    from datasets import ClassLabel

    from factory.llm.structured import Job, json_parser, run_jobs, text_parser
    from factory.llm.types import Constraint, GenerationRequest, Sampling
    from factory.personas import drift
    from factory.prompts import builtin, render
    from factory.seeds import derive_seed

    meta = inputs["people"]
    names = {c: f.names for c, f in meta.features.items() if isinstance(f, ClassLabel)}
    people = meta.select(ctx.batch).to_list()
    system = render(builtin("personas/system.jinja"))
    rows: list[dict] = []
    failures: list[dict] = []
    drift_rows: list[dict] = []
    metrics: dict[str, float] = {}

    def seed(person: dict, style: str, *more: Any) -> int:
        return derive_seed(ctx.seed, person["person_id"], style, *more) % (2**31)

    def sampling(s: int, max_tokens: int | None = None) -> Sampling:
        return Sampling(options.temperature, options.top_p, max_tokens or options.max_tokens, (), s)

    def record(style: str, person: dict, v, parsed_json: bool) -> list:
        """Keep a validated answer (or its failure) and its drift rows; nothing follows it."""
        metrics[f"tokens_in.{style}"] = metrics.get(f"tokens_in.{style}", 0) + v.tokens_in
        metrics[f"tokens_out.{style}"] = metrics.get(f"tokens_out.{style}", 0) + v.tokens_out
        metrics[f"retries.{style}"] = metrics.get(f"retries.{style}", 0) + v.attempts - 1
        if not v.ok:
            metrics[f"invalid.{style}"] = metrics.get(f"invalid.{style}", 0) + 1
            failures.append(
                {
                    "reason": v.reason,
                    "person_id": person["person_id"],
                    "style": style,
                    "raw": v.result.text,
                    "attempts": v.attempts,
                }
            )
            return []
        text = json.dumps(v.value, ensure_ascii=False) if parsed_json else v.value
        measures = drift.text_measures(drift.text_of(text, v.value))
        rows.append(
            {
                "person_id": person["person_id"],
                "style": style,
                "persona": text,
                "model": client.model_id,
                "seed": v.request.sampling.seed,
                "attempts": v.attempts,
                "finish_reason": v.result.finish_reason,
                "prompt_tokens": v.tokens_in,
                "completion_tokens": v.tokens_out,
                "polarity": measures["polarity"],
                "subjectivity": measures["subjectivity"],
            }
        )
        expect = drift.expected(person, names)
        said = drift.stated(style, text, v.value if parsed_json else None)
        for field, contradicted in drift.compare(expect, said).items():
            drift_rows.append(
                {
                    "person_id": person["person_id"],
                    "style": style,
                    "field": field,
                    "stated": None if field not in said else str(said[field]),
                    "expected": str(expect[field]),
                    "contradicted": contradicted,
                }
            )
        drift_rows.append(
            {
                "person_id": person["person_id"],
                "style": style,
                "field": "mentions_politics",
                "stated": None,
                "expected": None,
                "contradicted": bool(measures["mentions_politics"]),
            }
        )
        return []

    def reflective(person: dict, facts: dict, turn: int, history: list[dict]) -> Job:
        """The reflective style's job at `turn` of one person's conversation: `reflection_turns` turns, then the
        JSON profile. A reply's job returns the next turn's; a failed reply ends the conversation (kept in
        failures)."""
        if turn > options.reflection_turns:
            schema = style_defs.reflective_schema()
            final = render(builtin("personas/reflective_final.jinja"), facts=facts)
            req = GenerationRequest.chat(
                [*history, {"role": "user", "content": final}],
                sampling(seed(person, "reflective", "profile")),
                Constraint.schema(schema),
            )
            return Job(req, json_parser(schema), lambda v: record("reflective", person, v, True))
        asked = [*history, {"role": "user", "content": render(turn_path, facts=facts, turn=turn)}]
        req = GenerationRequest.chat(asked, sampling(seed(person, "reflective", turn), min(options.max_tokens, 160)))

        def replied(v) -> list[Job]:
            metrics["tokens_in.reflective"] = metrics.get("tokens_in.reflective", 0) + v.tokens_in
            metrics["tokens_out.reflective"] = metrics.get("tokens_out.reflective", 0) + v.tokens_out
            if v.ok:  # failed replies never enter the conversation
                return [reflective(person, facts, turn + 1, [*asked, {"role": "assistant", "content": v.value}])]
            metrics["invalid.reflective"] = metrics.get("invalid.reflective", 0) + 1
            failures.append(
                {
                    "reason": f"reflection turn {turn}: {v.reason}",
                    "person_id": person["person_id"],
                    "style": "reflective",
                    "raw": v.result.text,
                    "attempts": v.attempts,
                }
            )
            return []

        return Job(req, text_parser(10), replied)

    turn_path = builtin("personas/reflective_turn.jinja")
    # Every style's request for every person goes to the backend in one run, and each reflective conversation's
    # next turn joins it as soon as the turn before is in, so its batches stay full to the end. Conversations are
    # queued first: their turns run one after another, so they start before the one-shot styles. These follow
    # person by person, so one person's styles decode together and share the keys and values of their facts.
    jobs: dict[str, list[Job]] = {}
    chains: list[Job] = []
    facts = [style_defs.facts(p, names) for p in people]
    for style in options.styles:
        if style in ("objective_table", "subjective_table") or (
            style in options.templates and options.templates[style].schema_file
        ):
            schema = (
                style_defs.SCHEMAS[style]()
                if style in style_defs.SCHEMAS
                else json.loads(Path(options.templates[style].schema_file.resolved).read_text())
            )
            path = (
                builtin(f"personas/{style}.jinja")
                if style in style_defs.STYLES
                else options.templates[style].template.resolved
            )
            max_tokens = options.templates[style].max_tokens if style in options.templates else None
            for p, f in zip(people, facts):
                req = GenerationRequest.chat(
                    [{"role": "system", "content": system}, {"role": "user", "content": render(path, facts=f)}],
                    sampling(seed(p, style), max_tokens),
                    Constraint.schema(schema),
                )
                jobs.setdefault(p["person_id"], []).append(
                    Job(req, json_parser(schema), lambda v, p=p, style=style: record(style, p, v, True))
                )
        elif style == "descriptive" or style in options.templates:
            path = (
                builtin("personas/descriptive.jinja")
                if style == "descriptive"
                else options.templates[style].template.resolved
            )
            # a portrait three times the asked length (English runs ~1.3 tokens a word) ignored the ask: cut it there
            # rather than let it run to max_tokens, then again on each retry
            max_tokens = (
                options.templates[style].max_tokens
                if style in options.templates
                else min(options.max_tokens, DESCRIPTIVE_TOKENS_PER_WORD * options.descriptive_words)
            )
            for p, f in zip(people, facts):
                user = render(path, facts=f, max_words=options.descriptive_words)
                req = GenerationRequest.chat(
                    [{"role": "system", "content": system}, {"role": "user", "content": user}],
                    sampling(seed(p, style), max_tokens),
                )
                jobs.setdefault(p["person_id"], []).append(
                    Job(req, text_parser(20), lambda v, p=p, style=style: record(style, p, v, False))
                )
        else:  # reflective: turns in one growing conversation per person, then the profile
            chains += [reflective(p, f, 1, [{"role": "system", "content": system}]) for p, f in zip(people, facts)]
    with ctx.llm(options.backend) as client:  # `record` reads client.model_id as answers come in
        run_jobs(client, chains + [j for p in people for j in jobs.get(p["person_id"], [])], options.max_retries)
    # answers finish in the order the batch frees them: rows go out by person, then style, as the recipe lists them
    rank = {p["person_id"]: k for k, p in enumerate(people)}
    styles_rank = {s: k for k, s in enumerate(options.styles)}
    for table in (rows, failures, drift_rows):
        table.sort(key=lambda r: (rank[r["person_id"]], styles_rank[r["style"]]))
    return StageOutput(
        rows_dataset(rows, OUTPUTS["data"]),
        failures,
        metrics,
        extras={"drift": rows_dataset(drift_rows, OUTPUTS["drift"])},
    )


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts: Path) -> dict:
    from factory.personas.drift_summary import drift_summary

    return drift_summary(outputs["data"], outputs["drift"], artifacts)
