"""Simulate survey answers: each person (meta persona or a persona style) answers each question.

Inputs (roles): `people` (a meta-persona dataset), `questions` (a question table) and, optionally, `personas`
(a persona dataset); a listed `inputs: [people, personas, questions]` is matched to the roles by their columns.
Output (one row per person x style x question x sample x round):
    person_id (str), geography (str), weight (float64), style (str: 'meta' or a persona style), question_id (str),
    mode (str: fast | reason | multi_turn | logprob | free_text), sample (int32), round (int32),
    option_order (list[int32]: shown position -> original option index), choice (int32 | null: the ORIGINAL
    option index chosen), distribution (list[float32] | null: logprob mode, probability per original option),
    valid (bool), invalid_reason (str | null), reasoning (str | null), text (str: what the model wrote; the
    answer itself for open questions), model (str), seed (int64), prompt_tokens (int32), completion_tokens (int32)
Invalid answers stay in the output (`valid` false, `choice` null, with their reason) and are also copied to
`failures`: they are part of what the model did, never a choice and never dropped.

Modes:
  fast        the option letter only ("Answer: B"), sampled; parsed by `factory.answers.parse`
  reason      two or three sentences of reasons, then the letter
  multi_turn  round 0 is `reason`; in each later round every person sees the reasons of `peers` people drawn at
              random from the previous round's valid answers of the same geography, style and question
  logprob     no sampling and no parsing: the probability of each "Answer: <letter>" continuation, from
              `score_choices`, renormalised over the options shown (needs the transformers or vllm backend)
Open questions (kind 'open') get a free-text answer (`mode` free_text) in every mode but logprob; a meta
persona's Big Five traits (targets or census draws) are spelled out in bands there, so answers to open questions
carry the personality that preference pairs are built on. Style `base` answers with no persona at all.

Example:
    stages:
      answers:
        uses: answers
        inputs: [people, personas, questions]
        backend: small
        mode: logprob                # or fast, reason, multi_turn
        styles: [meta, objective_table, descriptive]
        shuffle_options: true        # per-person option order, mapped back to the original
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from factory.errors import DataError
from factory.options import BackendRef, StageOptions
from factory.stage import Columns, Needs, StageContext, StageOutput, rows_dataset

VERSION = 2  # 2: an option's full text inside a sentence is read; answer markers that disagree are invalid
INPUTS = {
    "people": Needs("person_id", "weight", description="who answers, as their census facts"),
    "personas": Needs("person_id", "style", "persona", optional=True, description="their written personas"),
    "questions": Needs("question_id", "kind", "text", "options", description="what they answer"),
}
OUTPUTS = {
    "data": Columns(
        {
            "person_id": "string",
            "geography": "string",
            "weight": "float64",
            "style": "string",
            "question_id": "string",
            "mode": "string",
            "sample": "int32",
            "round": "int32",
            "option_order": "list<int32>",
            "choice": "int32",
            "distribution": "list<float32>",
            "valid": "bool",
            "invalid_reason": "string",
            "reasoning": "string",
            "text": "string",
            "model": "string",
            "seed": "int64",
            "prompt_tokens": "int32",
            "completion_tokens": "int32",
        }
    )
}
PROMPTS = [
    "answers/system.jinja",
    "answers/fast.jinja",
    "answers/reason.jinja",
    "answers/multi_turn.jinja",
    "answers/open.jinja",
]


class Options(StageOptions):
    backend: BackendRef = Field(..., description="a backend named under `backends:`")
    mode: Literal["fast", "reason", "multi_turn", "logprob"] = Field("fast", description="how people answer")
    styles: list[str] | None = Field(
        None,
        description="'meta' (the census facts themselves), 'base' (no persona at all) and/or persona styles; default:"
        " meta + every style",
    )
    sample: int | None = Field(None, ge=1, description="seeded sample of this many persons (default all)")
    samples: int = Field(1, ge=1, le=1000, description="answers per person and question (sampled modes)")
    shuffle_options: bool = Field(False, description="show options in a per-person random order, mapped back")
    show_refusal: bool = Field(True, description="show a question's 'Refused' option (Pew lists it last)")
    constrain: bool = Field(
        False, description="fast mode: grammar-force 'Answer: <letter>' (never invalid; hides the invalid rate)"
    )
    temperature: float = Field(0.95, ge=0, le=2, description="the persona-catch study used 0.95")
    top_p: float = Field(0.9, gt=0, le=1, description="the persona-catch study used 0.9")
    max_tokens: int | None = Field(
        None, ge=1, le=8192, description="per answer; default 16 (fast), 200 (reason, multi_turn, open questions)"
    )
    max_retries: int = Field(0, ge=0, le=10, description="re-ask invalid answers with a fresh seed (hides invalids)")
    rounds: int = Field(2, ge=1, le=20, description="multi_turn: rounds after the first")
    peers: int = Field(5, ge=1, le=50, description="multi_turn: peers' reasons each person reads per round")
    open_words: int = Field(80, ge=5, le=1000, description="length asked of free-text answers")


def files(options: Options) -> list[Path]:
    from factory.prompts import builtin

    return [builtin(p) for p in PROMPTS]


def _styles(options: Options, personas, stage: str) -> list[str]:
    available = list(dict.fromkeys(personas["style"])) if personas is not None else []
    styles = options.styles or ["meta", *available]
    for s in styles:
        if s not in ("meta", "base") and s not in available:
            have = ", ".join(["meta", *available])
            raise DataError(f"stages.{stage}.styles: no '{s}' personas in the inputs (have: {have})")
    return styles


def plan(options: Options, inputs: dict, ctx: StageContext) -> list[list[int]]:
    people, personas = inputs["people"], inputs.get("personas")
    styles = _styles(options, personas, ctx.stage)
    rows = list(range(len(people)))
    if any(s not in ("meta", "base") for s in styles):  # only people someone wrote a persona for
        have = set(personas["person_id"])
        rows = [i for i, pid in enumerate(people["person_id"]) if pid in have]
    if options.sample is not None:
        if options.sample > len(rows):
            raise DataError(f"stages.{ctx.stage}.sample: {options.sample} requested but only {len(rows)} persons")
        picked = ctx.rng("sample").choice(len(rows), size=options.sample, replace=False)
        rows = sorted(rows[i] for i in picked)
    if options.mode == "multi_turn":  # peers come from the same geography: one batch per geography
        geos = _geographies(people)
        by_geo: dict[str, list[int]] = {}
        for i in rows:
            by_geo.setdefault(geos[i], []).append(i)
        return list(by_geo.values())
    size = options.batch_size or 8
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _geographies(people) -> list[str]:
    from datasets import ClassLabel

    col = "geography" if "geography" in people.column_names else "STATE"
    feature = people.features[col]
    values = people[col]
    return [feature.names[v] for v in values] if isinstance(feature, ClassLabel) else [str(v) for v in values]


# --- prompts ----------------------------------------------------------------------------------------------------
class _Item:
    """One answer to produce: who, which question, in which option order, with which seed."""

    __slots__ = ("person", "geo", "style", "persona", "question", "sample", "order", "seed", "peers", "round")

    def __init__(self, **kw: Any):
        for k, v in kw.items():
            setattr(self, k, v)


def _shown(question: dict, show_refusal: bool) -> list[int]:
    keep = list(range(len(question["options"])))
    if not show_refusal and question.get("refusal_index") is not None:
        keep.remove(question["refusal_index"])
    return keep


def _messages(options: Options, item: _Item, template: str) -> list[dict[str, str]]:
    from factory.answers.parse import letters
    from factory.prompts import builtin, render

    q = item.question
    choice = q["kind"] != "open"
    system = render(builtin("answers/system.jinja"), choice=choice)
    if not choice:
        traits = _traits(item.person) if item.style == "meta" else []
        user = render(
            builtin("answers/open.jinja"),
            persona=item.persona,
            traits=traits,
            question=q["text"],
            max_words=options.open_words,
        )
    else:
        shown = list(zip(letters(len(item.order)), [q["options"][j] for j in item.order]))
        extra = {"peers": item.peers} if template == "multi_turn" else {}
        user = render(
            builtin(f"answers/{template}.jinja"),
            persona=item.persona,
            question=q["text"],
            options=shown,
            letters=[letter for letter, _ in shown],
            **extra,
        )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _traits(person: dict) -> list[tuple[str, str, float]]:
    """A meta persona's Big Five as (trait, band, value), banded as in the personality study's rubric."""
    from factory.census.bigfive import TRAITS, bands

    if not all(person.get(t) is not None for t in TRAITS):
        return []
    return bands([person[t] for t in TRAITS])


# --- the stage --------------------------------------------------------------------------------------------------
def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    from datasets import ClassLabel

    from factory.personas.styles import facts
    from factory.seeds import derive_seed

    people, personas, questions = inputs["people"], inputs.get("personas"), inputs["questions"]
    styles = _styles(options, personas, ctx.stage)
    names = {c: f.names for c, f in people.features.items() if isinstance(f, ClassLabel)}
    geos = _geographies(people)
    batch = list(ctx.batch)
    persons = people.select(batch).to_list()
    texts: dict[tuple[str, str], str] = {}
    if personas is not None:
        wanted = {p["person_id"] for p in persons}
        for pid, style, text in zip(personas["person_id"], personas["style"], personas["persona"]):
            if pid in wanted:
                texts[(pid, style)] = text
    qs = questions.to_list()
    metrics: dict[str, float] = {}

    def bump(key: str, by: float = 1.0) -> None:
        metrics[key] = metrics.get(key, 0.0) + by

    items: list[_Item] = []
    for p, row in zip(persons, batch):
        pid = p["person_id"]
        for style in styles:
            if style == "meta":
                persona = json.dumps(facts(p, names), indent=2, ensure_ascii=False)
            elif style == "base":
                persona = None
            elif (pid, style) in texts:
                persona = texts[(pid, style)]
            else:  # the personas stage failed for this person and style: nothing to answer with
                bump(f"missing_persona.{style}")
                continue
            for q in qs:
                if q["kind"] == "open" and options.mode == "logprob":
                    bump("skipped_open")
                    continue
                order = _shown(q, options.show_refusal)
                if options.shuffle_options and q["kind"] != "open":
                    order = [order[j] for j in ctx.rng("order", pid, style, q["question_id"]).permutation(len(order))]
                n = 1 if options.mode == "logprob" else options.samples
                for s in range(n):
                    seed = derive_seed(ctx.seed, pid, style, q["question_id"], s) % (2**31)
                    items.append(
                        _Item(
                            person=p, geo=geos[row], style=style, persona=persona, question=q, sample=s,
                            order=order, seed=seed, peers=[], round=0,
                        )
                    )  # fmt: skip

    rows: list[dict] = []
    with ctx.llm(options.backend) as client:
        if options.mode == "logprob":
            choice_items = [it for it in items if it.question["kind"] != "open"]
            rows += _logprob(options, client, choice_items, bump)
        else:
            first = "fast" if options.mode == "fast" else "reason"
            rows += _sampled(options, client, items, first, 0, bump)
            if options.mode == "multi_turn":
                previous = rows
                for r in range(1, options.rounds + 1):
                    later = [it for it in items if it.question["kind"] != "open"]
                    _draw_peers(options, later, previous, r, ctx)
                    previous = _sampled(options, client, later, "multi_turn", r, bump)
                    rows += previous
    failures = [
        {
            "reason": r["invalid_reason"],
            "person_id": r["person_id"],
            "style": r["style"],
            "question_id": r["question_id"],
            "round": r["round"],
            "raw": r["text"],
        }
        for r in rows
        if not r["valid"]
    ]
    bump("answers", len(rows))
    bump("invalid", len(failures))
    return StageOutput(rows_dataset(rows, OUTPUTS["data"]), failures, metrics)


def _row(it: _Item, mode: str, model: str, **kw: Any) -> dict:
    return {
        "person_id": it.person["person_id"],
        "geography": it.geo,
        "weight": float(it.person["weight"]),
        "style": it.style,
        "question_id": it.question["question_id"],
        "mode": mode,
        "sample": it.sample,
        "round": it.round,
        "option_order": list(it.order) if it.question["kind"] != "open" else [],
        "model": model,
        "seed": it.seed,
        **kw,
    }


def _sampled(options: Options, client, items: list[_Item], template: str, round_: int, bump) -> list[dict]:
    """fast / reason / multi_turn answers (and free text for open questions), parsed, invalids kept."""
    from factory.answers.parse import letters, parse_choice
    from factory.llm.structured import Invalid, generate_validated
    from factory.llm.types import Constraint, GenerationRequest, Sampling

    short = template == "fast"
    requests = []
    for it in items:
        it.round = round_
        open_q = it.question["kind"] == "open"
        limit = options.max_tokens or (16 if short and not open_q else 200)
        constraint = None
        if options.constrain and short and not open_q:
            constraint = Constraint.one_of([f"Answer: {x}" for x in letters(len(it.order))])
        seed = it.seed if round_ == 0 else (it.seed + 7919 * round_) % (2**31)
        sampling = Sampling(options.temperature, options.top_p, limit, (), seed)
        requests.append(GenerationRequest.chat(_messages(options, it, template), sampling, constraint))

    def parser(it: _Item):
        shown = [it.question["options"][j] for j in it.order]

        def parse(text: str):
            if it.question["kind"] == "open":
                if not text.strip():
                    raise Invalid("empty output")
                return text.strip()
            parsed = parse_choice(text, shown)
            if parsed.index is None:
                raise Invalid(parsed.reason or "no answer found")
            return parsed

        return parse

    # a letter written before max_tokens cut the reasoning short is still an answer; a cut free text is not
    results: list = [None] * len(items)
    open_idx = [i for i, it in enumerate(items) if it.question["kind"] == "open"]
    choice_idx = [i for i, it in enumerate(items) if it.question["kind"] != "open"]
    for idx, truncation_ok in ((choice_idx, True), (open_idx, False)):
        if idx:
            got = generate_validated(
                client, [requests[i] for i in idx], [parser(items[i]) for i in idx], options.max_retries, truncation_ok
            )
            for i, v in zip(idx, got):
                results[i] = v
    rows = []
    for it, v in zip(items, results):
        open_q = it.question["kind"] == "open"
        mode = "free_text" if open_q else options.mode
        bump(f"tokens_in.{mode}", v.tokens_in)
        bump(f"tokens_out.{mode}", v.tokens_out)
        bump(f"retries.{mode}", v.attempts - 1)
        choice = reasoning = None
        if v.ok and not open_q:
            choice = it.order[v.value.index]
            reasoning = v.value.reasoning
        rows.append(
            _row(
                it,
                mode,
                client.model_id,
                choice=choice,
                distribution=None,
                valid=v.ok,
                invalid_reason=v.reason,
                reasoning=reasoning,
                text=v.result.text,
                prompt_tokens=v.tokens_in,
                completion_tokens=v.tokens_out,
            )
        )
    return rows


def _draw_peers(options: Options, items: list[_Item], previous: list[dict], round_: int, ctx: StageContext) -> None:
    """Give each item the reasons of `peers` people drawn from the previous round (same geography, style and
    question, never the person themself), seeded by person, style, question and round."""
    pool: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    options_of = {it.question["question_id"]: it.question["options"] for it in items}
    for r in previous:
        if not r["valid"] or r["mode"] == "free_text":
            continue
        said = r["reasoning"] or f'I choose "{options_of[r["question_id"]][r["choice"]]}".'
        pool.setdefault((r["geography"], r["style"], r["question_id"]), []).append((r["person_id"], said))
    for it in items:
        pid, qid = it.person["person_id"], it.question["question_id"]
        others = [said for who, said in pool.get((it.geo, it.style, qid), []) if who != pid]
        k = min(options.peers, len(others))
        picked = ctx.rng("peers", pid, it.style, qid, it.sample, round_).choice(len(others), size=k, replace=False)
        it.peers = [others[j] for j in sorted(picked)]


def _logprob(options: Options, client, items: list[_Item], bump) -> list[dict]:
    """The option distribution from one scoring pass per prompt: no sampling, no parsing, never invalid."""
    from factory.answers.parse import letters
    from factory.llm.types import ScoreRequest

    requests = [
        ScoreRequest.chat(_messages(options, it, "fast"), [f"Answer: {x}" for x in letters(len(it.order))])
        for it in items
    ]
    rows = []
    for it, res in zip(items, client.score_choices(requests)):
        if res.error is not None:  # the engine could not score this prompt: an invalid answer with its reason
            rows.append(_logprob_row(it, client, None, f"backend error: {res.error}"))
            continue
        top = max(res.logprobs)
        weights = [math.exp(v - top) for v in res.logprobs]
        total = sum(weights)
        dist = [0.0] * len(it.question["options"])
        for shown_at, original in enumerate(it.order):
            dist[original] = weights[shown_at] / total
        bump("tokens_scored.logprob", sum(res.token_counts))
        rows.append(_logprob_row(it, client, dist, None))
    return rows


def _logprob_row(it: _Item, client, dist: list[float] | None, invalid: str | None) -> dict:
    return _row(
        it,
        "logprob",
        client.model_id,
        choice=None,
        distribution=dist,
        valid=invalid is None,
        invalid_reason=invalid,
        reasoning=None,
        text="",
        prompt_tokens=0,
        completion_tokens=0,
    )


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts: Path) -> dict:
    """Invalid shares and answer counts per style and mode (the card shows them beside the evaluation)."""
    df = outputs["data"].select_columns(["style", "mode", "valid", "invalid_reason"]).to_pandas()
    if df.empty:
        return {"answers": 0}
    by = df.groupby(["style", "mode"])
    table = by["valid"].agg(answers="size", valid="sum")
    table["invalid_share"] = 1 - table["valid"] / table["answers"]
    reasons = df[~df["valid"]]["invalid_reason"].str.split(":").str[0].value_counts().head(5)
    return {
        "answers": int(len(df)),
        "by_style": {f"{s}/{m}": {k: float(v) for k, v in r.items()} for (s, m), r in table.iterrows()},
        "top_invalid_reasons": {str(k): int(v) for k, v in reasons.items()},
    }
