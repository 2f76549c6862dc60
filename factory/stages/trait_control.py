"""Measure personality control: base model and DPO adapter answer held-out questions, the pairs' judge scores both.

Inputs (roles): `adapter`, a `train_dpo` stage (its artifacts hold adapter/, a PEFT LoRA adapter whose
adapter_config.json names the base model in `base_model_name_or_path`), and `questions` (held-out open questions:
`split == 'held_out'` when the column exists, else every open question).
Output (one row per target x question x sample x model x trait, for judged answers):
    target (str), question_id (str), sample (int32), model (str: base | adapter), trait (str), score (float32),
    target_score (float32), judge (str)
Extra `answers` (one row per target x question x sample x model): target (str), target_vector (list[float32]),
    question_id (str), sample (int32), model (str), seed (int64), text (str), finish_reason (str),
    completion_tokens (int32), valid (bool: complete and judged), invalid_reason (str | null),
    scores (list[float32] | null), rationale (str | null), similarity, mae (float32 | null), judge (str)
Failures: answers cut at max_tokens (never judged: the study scored answers cut at 200 tokens) and judge failures.
Artifacts: artifacts/trait_control.png (per target, per trait: base and adapter means with stds, and the target).
Summary (per target, `factory.judging.control`): per model the mean and std per trait, similarity, MAE and
Euclidean distance to the target (averaged over answers) and counts (answers, judged, truncated); per trait
whether the adapter moved toward the target; the share of traits moved; the judge's name, checked against the
judge that scored the pairs (a `warnings` line when they differ: the study evaluated with another judge).

Example:
    stages:
      control:
        uses: trait_control
        inputs: [diplomat_adapter, questions]   # questions generated with held_out: 0.2
        judge: {backend: judge}                 # the same judge block as the preferences stage
        sample: 100                             # the study's 100 held-out questions
        # target: Diplomat                      # default: every target in the adapter's training pairs

Generation. One model load: the base answers first, then the adapter is put on it
(`PeftModel.from_pretrained`) and answers the same requests: the same prompts (the preferences stage's system
prompt, with the target's bands when `prompt_traits`, then the question) and the same seeds per question and
sample. `max_tokens` is generous (1024); an answer that reaches it is a failure, never scored, and is not re-asked
(re-asking would keep only the short answers). Requests go through the stage's request cache (the adapter's cache
key carries the train_dpo stage's fingerprint), so a rerun resumes.
Target. `target` names a target (looked up in `targets`, then in the adapter's training pairs) or gives a vector;
by default every target of the adapter's training pairs is evaluated (found through the train_dpo manifest's
input, a preferences stage). A vector-conditioned adapter (pairs of several targets, `prompt_traits: true`) is so
measured per target; with `prompt_traits: false` the prompt cannot name a target, so name one.
The judge block is a discriminated union on `kind` (`LLMJudgeOptions` or `ClassifierJudgeOptions`); VERSION 2
marks that change of the options' shape, which changes fingerprints: the outputs are unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from factory.errors import DataError, did_you_mean
from factory.judging.judges import JudgeOptions
from factory.judging.targets import check_vector
from factory.options import StageOptions, operational
from factory.stage import Columns, Needs, StageContext, StageOutput, rows_dataset

VERSION = 2
INPUTS = {
    "adapter": Needs("step", "loss", description="a train_dpo stage: its artifacts hold adapter/ (a PEFT LoRA)"),
    "questions": Needs("question_id", "kind", "text", description="held-out open questions"),
}
OUTPUTS = {
    "data": Columns(
        {
            "target": "string",
            "question_id": "string",
            "sample": "int32",
            "model": "string",
            "trait": "string",
            "score": "float32",
            "target_score": "float32",
            "judge": "string",
        }
    ),
    "answers": Columns(
        {
            "target": "string",
            "target_vector": "list<float32>",
            "question_id": "string",
            "sample": "int32",
            "model": "string",
            "seed": "int64",
            "text": "string",
            "finish_reason": "string",
            "completion_tokens": "int32",
            "valid": "bool",
            "invalid_reason": "string",
            "scores": "list<float32>",
            "rationale": "string",
            "similarity": "float32",
            "mae": "float32",
            "judge": "string",
        }
    ),
}
Vector = Annotated[list[float], AfterValidator(check_vector)]


class Options(StageOptions):
    judge: JudgeOptions = Field(..., description="the Big Five judge: the same block as the preferences stage's")
    target: str | Vector | None = Field(None, description="a target name or [O, C, E, A, N]; default: the pairs'")
    targets: str | dict[str, Vector] = Field("mbti_roles", description="where `target` names are looked up first")
    prompt_traits: bool = Field(True, description="describe the target in the system prompt (as the pairs did)")
    sample: int | None = Field(None, ge=1, description="seeded sample of held-out questions (default all)")
    samples: int = Field(1, ge=1, le=100, description="answers per question and model (the study: 1)")
    temperature: float = Field(0.7, ge=0, le=2, description="the study used 0.7")
    top_p: float = Field(0.9, gt=0, le=1, description="the study used 0.9")
    max_tokens: int = Field(1024, ge=16, le=16384, description="per answer; an answer cut here is a failure")
    similarity: Literal["exp_mse", "cosine", "neg_mae"] = Field("exp_mse", description="as in the preferences stage")
    alpha: float = Field(5.0, gt=0, le=100, description="exp_mse: exp(-alpha * MSE); the study used 5")
    base_model: str | None = Field(None, description="default: the adapter's base_model_name_or_path")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="weights' precision")
    device: str | None = operational(None, description="cpu, cuda... (default: cuda if available)")
    generation_batch_size: int = operational(8, description="requests per forward pass", ge=1)


def files(options: Options) -> list[Path]:
    from factory.judging import judges
    from factory.prompts import builtin

    return [builtin("preferences/trait_system.jinja"), *judges.files(options.judge)]


# --- inputs -----------------------------------------------------------------------------------------------------
def adapter_dir(trained: Any) -> Path:
    """The LoRA adapter a train_dpo stage (`ctx.upstream["adapter"]`) left in its artifacts."""
    return trained.artifact("adapter")


def pairs_stage(trained: Any) -> tuple[Any, dict] | None:
    """(pairs dataset, manifest of the preferences stage) that a train_dpo stage (an `Upstream`) read, found
    through its inputs; when it trained on reviewed pairs (a `review` stage), their data and the preferences stage
    behind them."""
    for upstream in trained.inputs().values():
        if upstream.uses == "preferences":
            return upstream.data(), upstream.manifest
        if upstream.uses == "review" and (judged := pairs_stage(upstream)) is not None:
            return upstream.data(), judged[1]
    return None


def resolve_targets(options: Options, trained: Any = None) -> dict[str, list[float]]:
    """name -> vector of the targets to evaluate; see the module doc."""
    from factory.judging.targets import named_vectors, preset_name, vector_key

    if isinstance(options.target, list):
        return {preset_name(options.target) or vector_key(options.target): list(options.target)}
    named = named_vectors(options.targets)
    if isinstance(options.target, str) and options.target in named:
        return {options.target: named[options.target]}
    found = pairs_stage(trained) if trained is not None else None
    trained: dict[str, list[float]] = {}
    if found is not None:
        ds = found[0].select_columns(["target", "target_vector", "rule", "split"])
        for t, v, rule, split in zip(ds["target"], ds["target_vector"], ds["rule"], ds["split"]):
            if rule == "judge" and split == "train":
                trained.setdefault(t, named.get(t) or [round(float(x), 6) for x in v])  # float32 -> the vector written
    if options.target is None:
        if not trained:
            raise DataError("trait_control.target: no judged training pairs found through the train_dpo stage; "
                            "name a target or give a vector")  # fmt: skip
        return dict(sorted(trained.items()))
    if options.target in trained:
        return {options.target: trained[options.target]}
    raise DataError(
        f"trait_control.target: unknown '{options.target}'{did_you_mean(options.target, [*named, *trained])}"
    )


def held_out(questions, options: Options, ctx: StageContext) -> list[dict]:
    rows = [q for q in questions.select_columns([c for c in ("question_id", "text", "kind", "split")
                                                 if c in questions.column_names]).to_list()
            if q["kind"] == "open" and q.get("split", "held_out") == "held_out"]  # fmt: skip
    if not rows:
        raise DataError(f"stages.{ctx.stage}: no held-out open questions in the questions input")
    if options.sample is not None and options.sample < len(rows):
        picked = ctx.rng("sample").choice(len(rows), size=options.sample, replace=False)
        rows = [rows[i] for i in sorted(picked)]
    return rows


# --- the stage --------------------------------------------------------------------------------------------------
def run(options: Options, inputs: dict, ctx: StageContext) -> StageOutput:
    from factory.judging import judges

    trained = ctx.upstream["adapter"]
    adapter = adapter_dir(trained)
    if not (adapter / "adapter_config.json").is_file():
        raise DataError(
            f"stages.{ctx.stage}.inputs.adapter: '{trained.name}' left no adapter in its artifacts "
            "(adapter/adapter_config.json); the adapter role takes a train_dpo stage"
        )
    base = options.base_model or json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    vectors = resolve_targets(options, trained)
    qs = held_out(inputs["questions"], options, ctx)
    cache = Path(ctx.workdir) / "requests.sqlite" if ctx.workdir else None
    answers, metrics = generate(options, base, adapter, qs, vectors, ctx.seed, cache, trained.fingerprint)
    if isinstance(options.judge, judges.ClassifierJudgeOptions):
        return score(options, answers, vectors, judges.load(options.judge), metrics)
    with ctx.llm(options.judge.backend) as client:  # opened once the generating model is freed
        return score(options, answers, vectors, judges.load(options.judge, client), metrics)


def evaluate(
    options: Options,
    base: str,
    adapter: Path,
    questions: list[dict],
    vectors: dict[str, list[float]],
    judge: Any,
    seed: int,
    cache_path: Path | None = None,
    adapter_tag: str = "adapter",
) -> StageOutput:
    """Generate with the base model and with the adapter on it, judge every complete answer, build the rows.

    `questions`: {question_id, text}; `vectors`: target name -> [O, C, E, A, N]; `judge`: anything with `name` and
    `judge([(question, answer)]) -> [Judgement]`. The same requests (prompts and seeds) go to both models."""
    answers, metrics = generate(options, base, adapter, questions, vectors, seed, cache_path, adapter_tag)
    return score(options, answers, vectors, judge, metrics)


def generate(
    options: Options,
    base: str,
    adapter: Path,
    questions: list[dict],
    vectors: dict[str, list[float]],
    seed: int,
    cache_path: Path | None = None,
    adapter_tag: str = "adapter",
) -> tuple[list[dict], dict[str, float]]:
    """(answers of the base model and of the adapter on it, metrics); the generating model is freed on return."""
    import torch
    from peft import PeftModel

    from factory.judging import targets as T
    from factory.judging.prompts import trait_prompt
    from factory.llm.backend import CachedBackend
    from factory.llm.cache import RequestCache
    from factory.llm.structured import generate_validated, text_parser
    from factory.llm.transformers_backend import TransformersBackend
    from factory.llm.types import GenerationRequest, Sampling
    from factory.seeds import derive_seed

    items, requests = [], []
    for name, vec in vectors.items():
        traits = T.bands(vec) if options.prompt_traits else []
        for q in sorted(questions, key=lambda q: q["question_id"]):
            for s in range(options.samples):
                item_seed = derive_seed(seed, q["question_id"], s) % (2**31)  # the same for both models and targets
                sampling = Sampling(options.temperature, options.top_p, options.max_tokens, (), item_seed)
                items.append((name, q, s, item_seed))
                requests.append(GenerationRequest.chat(trait_prompt(traits, q["text"]), sampling))
    backend = TransformersBackend(
        base, dtype=options.dtype, device=options.device, batch_size=options.generation_batch_size
    )
    client = CachedBackend(backend, RequestCache(cache_path) if cache_path else None)
    metrics: dict[str, float] = {}
    generated = {}
    try:
        generated["base"] = generate_validated(client, requests, text_parser(1), max_retries=0)
        backend.model = PeftModel.from_pretrained(backend.model, str(adapter)).eval()
        backend.model_id = f"{backend.model_id}+lora:{adapter_tag}"
        generated["adapter"] = generate_validated(client, requests, text_parser(1), max_retries=0)
    finally:
        metrics["backend_calls"] = float(client.calls)
        if client.cache is not None:
            client.cache.close()
    del client, backend  # free the generating model before the judge runs (an LLM judge may be as large)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    answers = []
    for model, got in generated.items():
        for (name, q, s, item_seed), v in zip(items, got):
            metrics[f"tokens_out.{model}"] = metrics.get(f"tokens_out.{model}", 0.0) + v.tokens_out
            answers.append({"target": name, "target_vector": vectors[name], "question_id": q["question_id"],
                            "question": q["text"], "sample": s, "model": model, "seed": item_seed,
                            "text": v.result.text, "finish_reason": v.result.finish_reason,
                            "completion_tokens": v.tokens_out, "reason": v.reason})  # fmt: skip
    return answers, metrics


def score(
    options: Options, answers: list[dict], vectors: dict[str, list[float]], judge: Any, metrics: dict[str, float]
) -> StageOutput:
    """Judge every complete answer (`generate`'s), build the rows; cut answers and judge failures are failures."""
    from factory.judging import targets as T

    failures: list[dict] = []
    todo = [a for a in answers if a["reason"] is None]
    for a, j in zip(todo, judge.judge([(a["question"], a["text"]) for a in todo])):
        a["judgement"] = j
    rows, out = [], []
    for a in answers:
        j = a.get("judgement")
        reason = a["reason"] if j is None else (None if j.ok else f"judge: {j.reason}")
        if reason is not None:
            failures.append({"reason": reason, "target": a["target"], "question_id": a["question_id"],
                             "sample": a["sample"], "model": a["model"], "raw": a["text"]})  # fmt: skip
            metrics[f"failed.{a['model']}"] = metrics.get(f"failed.{a['model']}", 0.0) + 1
        scores = j.scores if j is not None and j.ok else None
        vec = a["target_vector"]
        out.append(
            {
                "target": a["target"], "target_vector": vec, "question_id": a["question_id"], "sample": a["sample"],
                "model": a["model"], "seed": a["seed"], "text": a["text"], "finish_reason": a["finish_reason"],
                "completion_tokens": a["completion_tokens"], "valid": scores is not None, "invalid_reason": reason,
                "scores": scores, "rationale": None if j is None else j.rationale,
                "similarity": None if scores is None else T.similarity(vec, scores, options.similarity, options.alpha),
                "mae": None if scores is None else T.mae(vec, scores), "judge": judge.name,
            }
        )  # fmt: skip
        for t, value, goal in zip(T.TRAITS, scores or [], vec):
            rows.append({"target": a["target"], "question_id": a["question_id"], "sample": a["sample"],
                         "model": a["model"], "trait": t, "score": value, "target_score": goal,
                         "judge": judge.name})  # fmt: skip
    extras = {"answers": rows_dataset(out, answer_features())}
    return StageOutput(rows_dataset(rows, features()), failures, metrics, extras)


# --- schemas ----------------------------------------------------------------------------------------------------
def features():
    return OUTPUTS["data"].features()


def answer_features():
    return OUTPUTS["answers"].features()


def summarize(options: Options, outputs: dict, ctx: StageContext, artifacts: Path) -> dict:
    """The per-target report (`factory.judging.control`), its plot, and the judge checked against the pairs'."""
    from factory.judging import control

    answers = outputs["answers"].to_list()
    vectors = {a["target"]: a["target_vector"] for a in answers}
    reports = control.report(answers, vectors, options.similarity, options.alpha)
    if reports:
        control.plot(reports, artifacts / "trait_control.png")
    name = answers[0]["judge"] if answers else None
    check, warnings = judge_check(name, {a["question_id"] for a in answers}, options, ctx)
    return {"judge": name, "judge_check": check, "warnings": warnings, "targets": reports}


def judge_check(name: str | None, evaluated: set[str], options: Options, ctx: StageContext) -> tuple[str, list[str]]:
    """Compare this stage's judge and prompt with those of the pairs the adapter was trained on, and look for
    evaluated questions among the training pairs' (the held-out set must be held out)."""
    trained = ctx.upstream.get("adapter")
    found = pairs_stage(trained) if trained is not None else None
    if found is None:
        return "not checked: no preferences stage found through the train_dpo manifest", []
    pairs_judge = (found[1].get("summary") or {}).get("judge")
    warnings = []
    seen = {q for q, split in zip(found[0]["question_id"], found[0]["split"]) if split == "train"} & evaluated
    if seen:
        warnings.append(f"WARNING: {len(seen)} of {len(evaluated)} evaluated questions were training prompts")
    if pairs_judge and name and pairs_judge != name:
        warnings.append(f"WARNING: the pairs were judged by {pairs_judge} but this evaluation by {name}: "
                        "scores from different judges are not comparable")  # fmt: skip
    if found[1].get("config", {}).get("prompt_traits", True) != options.prompt_traits:
        warnings.append("WARNING: prompt_traits differs from the preferences stage's: the adapter is evaluated on "
                        "prompts unlike those it was trained on")  # fmt: skip
    return ("same judge as the pairs" if pairs_judge == name else f"pairs judged by {pairs_judge}"), warnings
