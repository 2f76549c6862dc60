"""Build DPO preference pairs (TRL conversational format) from judged free-text answers or human answer distributions.

Inputs (roles; a listed `inputs: [answers, people, questions]` is matched to them by their columns): `answers`
(the `answers` stage), `people` (`meta_personas`; Big Five traits needed by rule judge) and `questions`.
Output (one row per pair):
    prompt (list[{role, content}]: system, user), chosen, rejected (each [{role: 'assistant', content}]),
    target (str), target_vector (list[float32]), chosen_score, rejected_score, margin (float32),
    chosen_vector, rejected_vector (list[float32] | null: judged O, C, E, A, N; null under rule opinion),
    question_id (str), rule (str), judge (str: the judge's name, or 'human_groups:<attribute>'),
    chosen_person_id, rejected_person_id (str), rejected_style (str: meta | base), state, age_band (str: of the
    person whose answer or persona is chosen), split (str: train | test)
Extra `judgements` (rule judge; one row per judged answer): person_id, question_id (str), sample (int32),
    style (str: meta | base), target (str | null: the person's target; null for base answers, which are scored
    against every target), scores (list[float32] | null), similarity (float32 | null: to the person's target),
    rationale (str | null), judge (str), valid (bool), invalid_reason (str | null)
Extra `dropped` (one row per question x target, or person x question, that gave no pair): question_id, target,
    person_id (str | null), reason (str: margin | duplicate | no rejected candidate | ...), margin (float32 | null)
Failures: judgements still invalid after the judge's retries (person_id, question_id, sample, style, raw); those
answers take part in no pair. Manifest summary: pairs per target and split, mean margin and scores, dropped
counts by reason, the judge's name, failure rate and mean scores on base answers (its prior).

Example (the personality study's four targets; people drawn exactly at them):
    stages:
      people: {uses: meta_personas, geographies: [MA], n_per_geography: 8,
               bigfive: {mode: targets, targets: mbti_roles}}
      questions: {uses: questions, sets: [personality], sample: 200}
      answers: {uses: answers, inputs: [people, questions], backend: small, styles: [meta, base], samples: 4}
      pairs:
        uses: preferences
        inputs: [answers, people, questions]
        rule: judge
        judge: {backend: judge, max_retries: 2}   # kind: classifier, model: <folder or Hub id> for a classifier
        targets: mbti_roles      # or persona (each person's own vector), or {name: [O, C, E, A, N]}
        min_margin: 0.05
        test_share: 0.1

Rule judge. Every valid free-text answer of style meta or base is judged once (cached in the stage's request
cache). Each person's target comes from their traits (`factory.judging.targets`: their own rounded vector, or the
nearest named vector). Per question and target: chosen = the most similar answer among people with that target,
rejected = the least similar among base answers and other targets' answers, all scored against this target
(`factory.judging.pairs`); pairs under `min_margin` are dropped. Similarity: exp(-alpha * MSE) with the study's
alpha = 5, or cosine, or minus the MAE. The prompt is a neutral instruction plus, with `prompt_traits` (default),
the target in the answers stage's five bands, then the bare question; `prompt_traits: false` is the study's bare
prompt, where the adapter must carry the personality alone.
Rule opinion (OpinionQA questions with `human_groups`, answered by meta personas in a choice mode): per person and
question, the real answer distribution of the person's Pew group (`group_attribute`, mapped as `evaluate` does)
gives chosen = the group's most common answer and rejected = the person's simulated choice (multi-turn: last
round; several samples: the first valid), when its share is lower by `min_margin` or more. Prompt: the meta
persona, the question and its options; responses "Answer: <letter>. <option>".
Deduplication (`dedup_prompts`): of pairs with the same target and the same normalised prompt, the first is kept.
Split: questions whose normalised texts are near duplicates (word 1-2-gram Jaccard >= `near_duplicate_threshold`)
form one group and a seeded `test_share` of the groups goes to 'test', so no rephrased question straddles the
split. Batches are whole groups, so results never depend on `batch_size`.
Options are a discriminated union on `rule` (`JudgeRuleOptions`, the default, or `OpinionRuleOptions`), so each
rule has only its own fields; VERSION 2 marks that change of the options' shape (and of the judge block's, now a
union on `kind`), which changes fingerprints: the outputs are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import AfterValidator, Discriminator, Field, Tag, WrapValidator, model_validator

from factory.errors import DataError, did_you_mean
from factory.evaluate.metrics import GROUP_ATTRIBUTES
from factory.judging.judges import JudgeOptions
from factory.judging.prompts import trait_prompt
from factory.judging.targets import PERSONA, check_vector
from factory.options import StageOptions
from factory.stage import Columns, Needs, StageContext, StageOutput, rows_dataset

VERSION = 2
INPUTS = {
    "answers": Needs("person_id", "question_id", "style", "mode", "sample", "text", "valid",
                     description="free-text answers (rule judge) or choices (rule opinion): the answers stage"),
    "people": Needs("person_id", "weight", description="meta personas: Big Five traits (rule judge), census facts"),
    "questions": Needs("question_id", "text", "options", description="the questions the answers answer"),
}  # fmt: skip
PROMPTS = ["preferences/trait_system.jinja", "preferences/opinion_system.jinja", "preferences/opinion.jinja"]
STUDY_ALPHA = 5.0  # seed-003 section 3.3: sim = exp(-5 * MSE)


class _PairOptions(StageOptions):
    """Options of both rules."""

    min_margin: float = Field(
        0.05, ge=0, le=1, description="smallest chosen - rejected difference kept (similarity, or subgroup share)"
    )
    dedup_prompts: bool = Field(True, description="keep one pair per target and normalised prompt")
    test_share: float = Field(0.1, ge=0, lt=1, description="seeded share of questions in split 'test'")
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1, description="Jaccard at which questions group")


class JudgeRuleOptions(_PairOptions):
    """`rule: judge` (the default): judged free-text answers."""

    TAG: ClassVar[str] = "judge"
    rule: Literal["judge"] = Field("judge", description="judged free text")
    judge: JudgeOptions = Field(..., description="the Big Five judge (kind llm, the default, or classifier)")
    targets: str | dict[str, Annotated[list[float], AfterValidator(check_vector)]] = Field(
        PERSONA,
        description="'persona' (each person's own vector), a preset ('mbti_roles') or name -> [O, C, E, A, N]; a "
        "person's target is then the nearest named vector",
    )
    similarity: Literal["exp_mse", "cosine", "neg_mae"] = Field("exp_mse", description="sim to target")
    alpha: float = Field(STUDY_ALPHA, gt=0, le=100, description="exp_mse: exp(-alpha * MSE); the study used 5")
    only_targets: list[str] | None = Field(
        None, description="pairs for these targets only (one adapter per target, as the study trained)"
    )
    prompt_traits: bool = Field(True, description="describe the target in the system prompt")

    @model_validator(mode="after")
    def _consistent(self) -> JudgeRuleOptions:
        from factory.census.bigfive import TARGET_PRESETS

        if isinstance(self.targets, str) and self.targets != PERSONA and self.targets not in TARGET_PRESETS:
            choices = [PERSONA, *TARGET_PRESETS]
            raise ValueError(f"unknown targets '{self.targets}'{did_you_mean(self.targets, choices)}")
        if isinstance(self.targets, dict) and not self.targets:
            raise ValueError("targets: name at least one vector")
        if self.only_targets and self.targets != PERSONA:
            names = self.targets if isinstance(self.targets, dict) else TARGET_PRESETS[self.targets]
            for t in self.only_targets:
                if t not in names:
                    raise ValueError(f"only_targets: unknown target '{t}'{did_you_mean(t, names)}")
        return self


class OpinionRuleOptions(_PairOptions):
    """`rule: opinion`: human answer distributions of OpinionQA questions."""

    TAG: ClassVar[str] = "opinion"
    rule: Literal["opinion"] = Field("opinion", description="human distributions")
    group_attribute: Literal[GROUP_ATTRIBUTES] = Field("AGE", description="the Pew group attribute")


RULES = {"judge": JudgeRuleOptions, "opinion": OpinionRuleOptions}


def _rule(value: Any) -> Any:
    return value.get("rule", "judge") if isinstance(value, dict) else getattr(value, "rule", "judge")


def _unknown_rule(value: Any, handler: Any) -> Any:
    """An unknown `rule` is an error at `rule` (pydantic reports it at the block, naming its tag function)."""
    from pydantic import ValidationError
    from pydantic_core import ValidationError as CoreError

    try:
        return handler(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] != "union_tag_invalid":
            raise
        expected = " or ".join(repr(r) for r in RULES)
        error = {"type": "literal_error", "loc": ("rule",), "input": _rule(value), "ctx": {"expected": expected}}
        raise CoreError.from_exception_data(exc.title, [error]) from None


Options = Annotated[
    Union[Annotated[JudgeRuleOptions, Tag("judge")], Annotated[OpinionRuleOptions, Tag("opinion")]],  # noqa: UP007
    Discriminator(_rule),
    WrapValidator(_unknown_rule),
]
AnyOptions = JudgeRuleOptions | OpinionRuleOptions


def files(options: AnyOptions) -> list[Path]:
    from factory.judging import judges
    from factory.prompts import builtin

    return [builtin(p) for p in PROMPTS] + judges.files(getattr(options, "judge", None))


# --- inputs -----------------------------------------------------------------------------------------------------
def _choice_answers(answers, qids: set[str] | None = None):
    """Meta personas' choices on choice questions: last round, first valid sample; logprob rows vote their mode."""
    import numpy as np

    cols = ["person_id", "question_id", "style", "mode", "sample", "round", "choice", "distribution", "valid"]
    df = answers.select_columns(cols).to_pandas()
    df = df[(df["mode"] != "free_text") & (df["style"] == "meta") & df["valid"]]
    if qids is not None:
        df = df[df["question_id"].isin(qids)]
    pick = [
        int(c) if c == c and c is not None else (int(np.argmax(d)) if d is not None and len(d) else -1)
        for c, d in zip(df["choice"], df["distribution"])
    ]
    df = df.assign(pick=pick)
    df = df[df["pick"] >= 0]
    last = df.groupby(["person_id", "question_id"])["round"].transform("max")
    df = df[df["round"] == last].sort_values(["person_id", "question_id", "sample"], kind="stable")
    return df.drop_duplicates(["person_id", "question_id"])


def _free_text(answers, qids: set[str] | None = None):
    cols = ["person_id", "question_id", "style", "mode", "sample", "text", "valid"]
    df = answers.select_columns(cols).to_pandas()
    df = df[(df["mode"] == "free_text") & df["valid"]]
    return df if qids is None else df[df["question_id"].isin(qids)]


def _candidate_questions(options: Options, answers, questions) -> list[str]:
    if options.rule == "judge":
        df = _free_text(answers)
        return sorted(set(df[df["style"].isin(["meta", "base"])]["question_id"]))
    answered = set(_choice_answers(answers)["question_id"])
    with_groups = {
        q["question_id"]
        for q in questions.select_columns(["question_id", "human_groups"])
        if any(g["attribute"] == options.group_attribute for g in q["human_groups"] or [])
    }
    return sorted(answered & with_groups)


def plan(options: Options, inputs: dict, ctx: StageContext) -> list[dict]:
    """Batches of whole near-duplicate groups of questions; the test split is drawn here, over all questions."""
    from factory.judging.pairs import near_duplicate_groups, pick_test_questions

    answers, questions = inputs["answers"], inputs["questions"]
    qids = _candidate_questions(options, answers, questions)
    if not qids:
        what = (
            "valid free-text answers (meta or base style)"
            if options.rule == "judge"
            else f"meta-persona choices on questions with human_groups for {options.group_attribute}"
        )
        raise DataError(f"stages.{ctx.stage}: no {what} to build pairs from")
    text = dict(zip(questions["question_id"], questions["text"]))
    groups = near_duplicate_groups([(q, text[q]) for q in qids], options.near_duplicate_threshold)
    test = pick_test_questions(groups, options.test_share, ctx.rng("split"))
    members: dict[str, list[str]] = {}
    for qid in qids:
        members.setdefault(groups[qid], []).append(qid)
    size = options.batch_size or 32
    batches, current = [], []
    for root in sorted(members):
        if current and len(current) + len(members[root]) > size:
            batches.append(current)
            current = []
        current += members[root]
    batches.append(current)
    return [{"questions": b, "test": sorted(set(b) & test)} for b in batches]


def _persons(people, ids: set[str]) -> dict[str, dict]:
    """person_id -> traits (list or None), state, age_band and the row itself (for prompts)."""
    from datasets import ClassLabel

    from factory.judging.targets import TRAITS

    names = {c: f.names for c, f in people.features.items() if isinstance(f, ClassLabel)}
    keep = [i for i, pid in enumerate(people["person_id"]) if pid in ids]
    out = {}
    for row in people.select(keep).to_list():
        traits = [row[t] for t in TRAITS] if all(row.get(t) is not None for t in TRAITS) else None
        age = _label(row, names, "age_band" if "age_band" in row else "AGE")
        out[row["person_id"]] = {
            "traits": traits,
            "state": str(row.get("geography_name") or row.get("STATE") or ""),
            "age_band": "" if age is None else str(age),
            "row": row,
            "names": names,
        }
    return out


def _label(row: dict, names: dict[str, list[str]], col: str) -> Any:
    """A meta persona's value in `col`, as its category name when the column is a ClassLabel."""
    v = row.get(col)
    return names[col][v] if col in names and isinstance(v, int) else v


# --- the stage --------------------------------------------------------------------------------------------------
def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    from factory.judging import judges

    answers, people, questions = inputs["answers"], inputs["people"], inputs["questions"]
    qids = set(ctx.batch["questions"])
    test = set(ctx.batch["test"])
    qs = {q["question_id"]: q for q in questions.to_list() if q["question_id"] in qids}
    if options.rule == "opinion":
        choices = _choice_answers(answers, qids)
        persons = _persons(people, set(choices["person_id"]))
        return opinion_rule(options, choices.to_dict("records"), persons, qs, test)
    df = _free_text(answers, qids)
    persons = _persons(people, set(df[df["style"] == "meta"]["person_id"]))
    if isinstance(options.judge, judges.ClassifierJudgeOptions):
        return judge_rule(options, df.to_dict("records"), persons, qs, judges.load(options.judge), test)
    with ctx.llm(options.judge.backend) as client:
        return judge_rule(options, df.to_dict("records"), persons, qs, judges.load(options.judge, client), test)


def judge_rule(
    options: Options, rows: list[dict], persons: dict[str, dict], questions: dict[str, dict], judge, test: set[str]
) -> StageOutput:
    """Judge free-text answers (`rows`: person_id, question_id, style, sample, text) and build pairs.

    `judge` is anything with `name` and `judge([(question, answer)]) -> [Judgement]`; `persons` maps person_id to
    {traits, state, age_band} (`_persons`); `test` holds the question ids of the test split."""
    import numpy as np

    from factory.judging import targets as T
    from factory.judging.pairs import Candidate, judge_pairs

    metrics: dict[str, float] = {}
    skipped = [r for r in rows if r["style"] not in ("meta", "base")]
    if skipped:
        metrics["skipped_persona_styles"] = float(len(skipped))
    rows = sorted(
        (r for r in rows if r["style"] in ("meta", "base")),
        key=lambda r: (r["question_id"], r["style"], r["person_id"], r["sample"]),
    )
    meta_ids = sorted({r["person_id"] for r in rows if r["style"] == "meta"})
    lacking = [p for p in meta_ids if p not in persons or persons[p]["traits"] is None]
    if lacking:
        raise DataError(
            f"people: no Big Five traits for {len(lacking)} persons (e.g. {lacking[0]}); rule judge needs them"
        )
    names, vectors = T.assign(np.array([persons[p]["traits"] for p in meta_ids]).reshape(-1, 5), options.targets)
    target_of = dict(zip(meta_ids, names))

    got = judge.judge([(questions[r["question_id"]]["text"], r["text"]) for r in rows])
    judgements, failures, candidates = [], [], []
    for r, j in zip(rows, got):
        target = target_of.get(r["person_id"]) if r["style"] == "meta" else None
        sim = T.similarity(vectors[target], j.scores, options.similarity, options.alpha) if j.ok and target else None
        judgements.append(
            {
                "person_id": r["person_id"], "question_id": r["question_id"], "sample": int(r["sample"]),
                "style": r["style"], "target": target, "scores": j.scores, "similarity": sim,
                "rationale": j.rationale, "judge": judge.name, "valid": j.ok, "invalid_reason": j.reason,
            }
        )  # fmt: skip
        for k, v in (("tokens_in", j.tokens_in), ("tokens_out", j.tokens_out), ("retries", j.attempts - 1)):
            metrics[f"judge.{k}"] = metrics.get(f"judge.{k}", 0.0) + v
        if not j.ok:
            failures.append({"reason": f"judge: {j.reason}", "person_id": r["person_id"],
                             "question_id": r["question_id"], "sample": r["sample"], "style": r["style"],
                             "raw": j.raw})  # fmt: skip
            continue
        candidates.append(Candidate(r["person_id"], r["question_id"], int(r["sample"]), r["style"], target,
                                    tuple(j.scores), r["text"]))  # fmt: skip

    pairs, dropped = judge_pairs(candidates, vectors, options.similarity, options.alpha, options.min_margin)
    if options.only_targets is not None:
        pairs = [p for p in pairs if p["target"] in options.only_targets]
        dropped = [d for d in dropped if d["target"] in options.only_targets]
    out = []
    for p in pairs:
        c, r = p["chosen"], p["rejected"]
        traits = T.bands(p["target_vector"]) if options.prompt_traits else []
        person = persons.get(c.person_id, {})
        out.append(
            {
                "prompt": trait_prompt(traits, questions[p["question_id"]]["text"]),
                "chosen": [{"role": "assistant", "content": c.text}],
                "rejected": [{"role": "assistant", "content": r.text}],
                "target": p["target"], "target_vector": p["target_vector"],
                "chosen_score": p["chosen_score"], "rejected_score": p["rejected_score"], "margin": p["margin"],
                "chosen_vector": list(c.scores), "rejected_vector": list(r.scores),
                "question_id": p["question_id"], "rule": "judge", "judge": judge.name,
                "chosen_person_id": c.person_id, "rejected_person_id": r.person_id, "rejected_style": r.style,
                "state": person.get("state", ""), "age_band": person.get("age_band", ""),
                "split": "test" if p["question_id"] in test else "train",
            }
        )  # fmt: skip
    metrics["judged"] = float(len(rows))
    metrics["judge_failures"] = float(len(failures))
    extras = {"judgements": rows_dataset(judgements, judgement_features())}
    return _finish(options, out, dropped, failures, metrics, extras)


def opinion_rule(
    options: Options, choices: list[dict], persons: dict[str, dict], questions: dict[str, dict], test: set[str]
) -> StageOutput:
    """Pairs from simulated choices (`choices`: person_id, question_id, pick = original option index) against
    the real answer distribution of each person's Pew group."""
    import json

    from factory.answers.parse import letters
    from factory.evaluate.metrics import PEOPLE_COLUMN, pew_group
    from factory.judging.pairs import group_shares, opinion_pair
    from factory.personas.styles import facts
    from factory.prompts import builtin, render

    attr = options.group_attribute
    col = PEOPLE_COLUMN[attr]
    group_of = {}
    for pid, p in persons.items():
        group_of[pid] = pew_group(attr, [_label(p["row"], p["names"], col)])[0]
    system = render(builtin("preferences/opinion_system.jinja"))
    shares = {qid: group_shares(q["human_groups"], attr) for qid, q in questions.items()}
    out, dropped = [], []
    for c in sorted(choices, key=lambda c: (c["question_id"], c["person_id"])):
        q, pid = questions[c["question_id"]], c["person_id"]
        group = group_of.get(pid)
        pair, why = opinion_pair(int(c["pick"]), group, shares[q["question_id"]], q["refusal_index"],
                                 options.min_margin)  # fmt: skip
        target = f"{attr}={group}"
        if pair is None:
            margin = None
            if why == "margin":
                dist = shares[q["question_id"]][group]
                margin = max(d for i, d in enumerate(dist) if i != q["refusal_index"]) - dist[int(c["pick"])]
            dropped.append({"question_id": q["question_id"], "target": target, "person_id": pid, "reason": why,
                            "margin": margin})  # fmt: skip
            continue
        shown = list(zip(letters(len(q["options"])), q["options"]))
        persona = json.dumps(facts(persons[pid]["row"], persons[pid]["names"]), indent=2, ensure_ascii=False)
        user = render(builtin("preferences/opinion.jinja"), persona=persona, question=q["text"], options=shown)
        out.append(
            {
                "prompt": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                "chosen": _reply(shown, pair["chosen"]), "rejected": _reply(shown, pair["rejected"]),
                "target": target, "target_vector": pair["target_vector"],
                "chosen_score": pair["chosen_score"], "rejected_score": pair["rejected_score"],
                "margin": pair["margin"], "chosen_vector": None, "rejected_vector": None,
                "question_id": q["question_id"], "rule": "opinion", "judge": f"human_groups:{attr}",
                "chosen_person_id": pid, "rejected_person_id": pid, "rejected_style": "meta",
                "state": persons[pid]["state"], "age_band": persons[pid]["age_band"],
                "split": "test" if q["question_id"] in test else "train",
            }
        )  # fmt: skip
    return _finish(options, out, dropped, [], {"choices": float(len(choices))}, {})


def _reply(shown: list[tuple[str, str]], i: int) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": f"Answer: {shown[i][0]}. {shown[i][1]}"}]


def _finish(options: Options, pairs: list[dict], dropped: list[dict], failures: list[dict], metrics: dict,
            extras: dict) -> StageOutput:  # fmt: skip
    from factory.judging.pairs import dedup
    from factory.questions.sets import normalize

    if options.dedup_prompts:
        pairs, dupes = dedup(pairs, lambda p: (p["target"], normalize(" ".join(m["content"] for m in p["prompt"]))))
        dropped = dropped + [
            {"question_id": p["question_id"], "target": p["target"], "person_id": p["chosen_person_id"],
             "reason": "duplicate", "margin": p["margin"]}
            for p in dupes
        ]  # fmt: skip
    for d in dropped:
        d.setdefault("person_id", None)
        metrics[f"dropped.{d['reason']}"] = metrics.get(f"dropped.{d['reason']}", 0.0) + 1
    metrics["pairs"] = float(len(pairs))
    extras = {**extras, "dropped": rows_dataset(dropped, dropped_features())}
    return StageOutput(rows_dataset(pairs, features()), failures, metrics, extras)


# --- schemas ----------------------------------------------------------------------------------------------------
PAIRS = Columns(
    {
        "prompt": "any",  # list of {role, content}: features() builds the exact type
        "chosen": "any",
        "rejected": "any",
        "target": "string",
        "target_vector": "list<float32>",
        "chosen_score": "float32",
        "rejected_score": "float32",
        "margin": "float32",
        "chosen_vector": "list<float32>",
        "rejected_vector": "list<float32>",
        "question_id": "string",
        "rule": "string",
        "judge": "string",
        "chosen_person_id": "string",
        "rejected_person_id": "string",
        "rejected_style": "string",
        "state": "string",
        "age_band": "string",
        "split": "string",
    }
)
JUDGEMENTS = Columns(
    {
        "person_id": "string",
        "question_id": "string",
        "sample": "int32",
        "style": "string",
        "target": "string",
        "scores": "list<float32>",
        "similarity": "float32",
        "rationale": "string",
        "judge": "string",
        "valid": "bool",
        "invalid_reason": "string",
    }
)
DROPPED = Columns(
    {"question_id": "string", "target": "string", "person_id": "string", "reason": "string", "margin": "float32"}
)


def outputs(options: AnyOptions) -> dict[str, Columns]:
    """The pairs, the dropped candidates and, under rule judge, every judgement."""
    out = {"data": PAIRS, "dropped": DROPPED}
    return {**out, "judgements": JUDGEMENTS} if isinstance(options, JudgeRuleOptions) else out


def features():
    """The pairs' exact features (TRL's conversational format: messages are lists of {role, content})."""
    from datasets import Features, List, Value

    message = List({"role": Value("string"), "content": Value("string")})
    types = {n: message for n in ("prompt", "chosen", "rejected")}
    return Features({n: types.get(n) or Columns({n: t}).features()[n] for n, t in PAIRS.types.items()})


def judgement_features():
    return JUDGEMENTS.features()


def dropped_features():
    return DROPPED.features()


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts: Path) -> dict:
    """Pairs per target and split, margins and scores, dropped counts, and the judge: name, failure rate, prior."""
    import numpy as np

    from factory.judging.targets import TRAITS

    df = outputs["data"].select_columns(["target", "split", "margin", "chosen_score", "rejected_score", "judge"])
    df = df.to_pandas()
    dropped = outputs["dropped"].select_columns(["reason"]).to_pandas()
    summary: dict[str, Any] = {
        "rule": options.rule,
        "pairs": int(len(df)),
        "pairs_by_target": {
            str(t): {s: int(n) for s, n in g["split"].value_counts().sort_index().items()}
            for t, g in df.groupby("target")
        },
        "mean_margin": float(df["margin"].mean()) if len(df) else None,
        "mean_margin_by_target": {str(t): float(m) for t, m in df.groupby("target")["margin"].mean().items()},
        "mean_chosen_score": float(df["chosen_score"].mean()) if len(df) else None,
        "mean_rejected_score": float(df["rejected_score"].mean()) if len(df) else None,
        "dropped": {str(k): int(v) for k, v in dropped["reason"].value_counts().sort_index().items()},
    }
    summary["dropped_by_margin"] = summary["dropped"].get("margin", 0)
    summary["dropped_as_duplicate"] = summary["dropped"].get("duplicate", 0)
    if "judgements" in outputs:
        j = outputs["judgements"].select_columns(["style", "scores", "valid", "judge"]).to_pandas()
        summary["judge"] = sorted(set(j["judge"]))[0] if len(j) else None
        summary["judge_identity"] = _identity(options, summary["judge"])
        summary["judged"] = int(len(j))
        summary["judge_failures"] = int((~j["valid"]).sum())
        summary["judge_failure_rate"] = float((~j["valid"]).mean()) if len(j) else None
        base = j[(j["style"] == "base") & j["valid"]]
        if len(base):  # the judge's prior: what it says of answers written with no personality asked for
            means = np.stack(base["scores"].to_numpy()).mean(axis=0)
            summary["judge_mean_scores_base"] = {t: float(m) for t, m in zip(TRAITS, means)}
    return summary


def _identity(options: AnyOptions, name: str | None) -> dict | None:
    o = getattr(options, "judge", None)
    if o is None:
        return None
    fields = ("backend", "model", "revision")
    return {"name": name, "kind": o.kind, **{k: getattr(o, k, None) for k in fields}}
