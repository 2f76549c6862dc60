"""Big Five judges: read a question and its answer, return five trait scores in [0, 1] (O, C, E, A, N).

`kind: llm` (the personality study's judge, its flaws fixed): a rubric prompt (`judge/system.jinja`,
`judge/big_five.jinja`: infer the author's personality; five bands per trait, each with a short behavioural
description) answered as JSON constrained and validated by `schema()`:
    {"rationale": str (at most `rationale_chars`), "scores": {"openness": number 0..1, ... 5 traits}}
The rationale comes first so the model writes its evidence before the numbers. Integers 0 and 1 are valid scores
(the study's validator demanded floats and re-asked). Greedy by default (temperature 0: one answer per text, so a
judgement is a property of the text); a failed attempt is re-asked at most `max_retries` times with a fresh seed,
sampled at `retry_temperature` after a greedy first attempt (greedy would repeat the failure); what still fails is
returned with its reason. Requests go through the stage's request cache, so every text is judged once per stage folder.

`kind: classifier`: a `transformers` sequence-classification model (local folder or Hub id) with five regression
outputs; scores are sigmoid(logits) in [0, 1], reordered to O, C, E, A, N by `labels` (the model's output order;
default: its `id2label` when those are trait names, else O, C, E, A, N). An answer longer than the model's input
is a failure, never scored on a cut text.

Identity. `judge.name` names what judged: `llm:<model id>#<sha12>` or `classifier:<model>#<sha12>`, the hash
covering the prompt files, the schema and the decoding settings (LLM) or the label order and model config
(classifier). Stages store it with every judgement, so pairs and an evaluation judged differently are visible.

Options. A judge block is `LLMJudgeOptions` or `ClassifierJudgeOptions`, chosen by `kind` ('llm' when left out), each
with only its own fields (`JudgeOptions`, a discriminated union). `load(options, client)` builds the judge; an llm
judge asks a client its stage opened (`ctx.llm(backend)`), so this package never sees the stage context.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, WrapValidator, model_validator

from factory.census.bigfive import TRAITS
from factory.errors import DataError, did_you_mean
from factory.options import BackendRef, OptionBlock, operational

PROMPTS = ["judge/system.jinja", "judge/big_five.jinja"]
Trait = Literal["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]


class LLMJudgeOptions(OptionBlock):
    """`kind: llm` (the default when `kind` is left out): a recipe backend with the rubric prompt."""

    kind: Literal["llm"] = Field("llm", description="an LLM with the rubric")
    backend: BackendRef = Field(..., description="a backend named under `backends:`")
    temperature: float = Field(0.0, ge=0, le=2, description="0: greedy, one judgement per text")
    retry_temperature: float = Field(0.7, gt=0, le=2, description="temperature of re-asks after a greedy attempt")
    max_retries: int = Field(2, ge=0, le=10, description="re-asks of a failed judgement before it is a failure")
    max_tokens: int = Field(400, ge=32, le=4096, description="per judgement; a cut answer is a failure")
    rationale_chars: int = Field(400, ge=10, le=4000, description="longest rationale the schema allows")


class ClassifierJudgeOptions(OptionBlock):
    """`kind: classifier`: a trait classifier (five regression outputs)."""

    kind: Literal["classifier"] = Field("classifier", description="a trait classifier")
    model: str = Field(..., description="a local folder or Hub id (5 regression outputs)")
    revision: str | None = Field(None, description="Hub revision (pin it for reproducible scores)")
    labels: list[Trait] | None = Field(None, description="trait of each output (default id2label)")
    max_length: int = Field(512, ge=16, le=8192, description="input tokens; longer answers fail")
    batch_size: int = operational(16, description="texts per forward pass", ge=1)
    device: str | None = operational(None, description="cpu, cuda... (default: cuda if available)")

    @model_validator(mode="after")
    def _labels(self) -> ClassifierJudgeOptions:
        if self.labels is not None and sorted(self.labels) != sorted(TRAITS):
            raise ValueError(f"labels must name each of {', '.join(TRAITS)} once")
        return self


KINDS = {"llm": LLMJudgeOptions, "classifier": ClassifierJudgeOptions}


def _kind(value: Any) -> Any:
    """The judge block's `kind`; 'llm' when it is left out (`judge: {backend: small}`)."""
    return value.get("kind", "llm") if isinstance(value, dict) else getattr(value, "kind", "llm")


def _as_written(value: Any, handler: Any) -> Any:
    """Report errors at the keys as written (`judge.backend`, not pydantic's `judge.llm.backend`); an unknown
    `kind` is an error at `kind`, an unknown key names the chosen kind's fields; unknown keys come first."""
    from pydantic import ValidationError
    from pydantic_core import ValidationError as CoreError

    try:
        return handler(value)
    except ValidationError as exc:
        tag = _kind(value)
        errors, unknown = [], []
        for e in exc.errors():
            loc = tuple(e["loc"])
            if loc and loc[0] == tag:
                loc = loc[1:]
            if e["type"] == "union_tag_invalid":
                kinds = " or ".join(repr(k) for k in KINDS)
                errors.append({"type": "literal_error", "loc": ("kind",), "input": tag, "ctx": {"expected": kinds}})
            elif e["type"] == "extra_forbidden" and tag in KINDS:
                known = list(KINDS[tag].model_fields)
                message = f"unknown key{did_you_mean(str(loc[-1]), known)}"
                unknown.append({"type": "value_error", "loc": loc, "input": e["input"], "ctx": {"error": message}})
            else:
                errors.append({k: v for k, v in e.items() if k in ("type", "input", "ctx")} | {"loc": loc})
        raise CoreError.from_exception_data(exc.title, unknown + errors) from None


JudgeOptions = Annotated[
    Union[Annotated[LLMJudgeOptions, Tag("llm")], Annotated[ClassifierJudgeOptions, Tag("classifier")]],  # noqa: UP007
    Discriminator(_kind),
    WrapValidator(_as_written),
]
"""The Big Five judge block: `LLMJudgeOptions` or `ClassifierJudgeOptions`, chosen by `kind` (default 'llm')."""
AnyJudgeOptions = LLMJudgeOptions | ClassifierJudgeOptions


@dataclass
class Judgement:
    scores: list[float] | None  # O, C, E, A, N; None when the judge failed
    rationale: str | None
    reason: str | None  # why it failed (None on success)
    raw: str = ""
    attempts: int = 1
    tokens_in: int = 0
    tokens_out: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None


def schema(rationale_chars: int = 400) -> dict[str, Any]:
    score = {"type": "number", "minimum": 0, "maximum": 1}  # "number" admits 0 and 1 written as integers
    return {
        "type": "object",
        "properties": {
            "rationale": {"type": "string", "minLength": 1, "maxLength": rationale_chars},
            "scores": {
                "type": "object",
                "properties": {t: score for t in TRAITS},
                "required": list(TRAITS),
                "additionalProperties": False,
            },
        },
        "required": ["rationale", "scores"],
        "additionalProperties": False,
    }


def prompt_files() -> list[Path]:
    from factory.prompts import builtin

    return [builtin(p) for p in PROMPTS]


def files(options: AnyJudgeOptions | None) -> list[Path]:
    """Built-in files whose bytes enter a stage's fingerprint (the rubric, for an llm judge)."""
    return prompt_files() if isinstance(options, LLMJudgeOptions) else []


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()


class LLMJudge:
    def __init__(self, client: Any, options: LLMJudgeOptions):
        self.client = client
        self.options = options
        self.schema = schema(options.rationale_chars)
        decoding = {k: getattr(options, k) for k in ("temperature", "retry_temperature", "max_retries", "max_tokens")}
        sha = _sha(*(p.read_bytes() for p in prompt_files()), json.dumps(self.schema), json.dumps(decoding))
        self.identity = {"kind": "llm", "backend": options.backend, "model": client.model_id, "sha": sha}
        self.name = f"llm:{client.model_id}#{sha[:12]}"

    def _request(self, question: str, answer: str, temperature: float, seed: int):
        from factory.llm.types import Constraint, GenerationRequest, Sampling
        from factory.prompts import builtin, render

        system = render(builtin("judge/system.jinja"))
        user = render(
            builtin("judge/big_five.jinja"),
            question=question,
            answer=answer,
            rationale_chars=self.options.rationale_chars,
        )
        return GenerationRequest.chat(
            [{"role": "system", "content": system}, {"role": "user", "content": user}],
            Sampling(temperature, 1.0, self.options.max_tokens, (), seed),
            Constraint.schema(self.schema),
        )

    def judge(self, items: list[tuple[str, str]]) -> list[Judgement]:
        """Judge (question, answer) pairs; the seed depends on the texts only, so a text is judged the same way
        (and hits the cache) wherever it comes from."""
        from factory.llm.structured import generate_validated, json_parser
        from factory.seeds import derive_seed

        o = self.options
        parse = json_parser(self.schema)
        seeds = [derive_seed(0, "judge", q, a) % (2**31) for q, a in items]
        first = [self._request(q, a, o.temperature, s) for (q, a), s in zip(items, seeds)]
        greedy = o.temperature == 0
        got = generate_validated(self.client, first, parse, 0 if greedy else o.max_retries)
        out = [self._judgement(v) for v in got]
        if greedy and o.max_retries:
            again = [i for i, v in enumerate(got) if not v.ok]
            retry = [
                self._request(*items[i], o.retry_temperature, derive_seed(seeds[i], "retry") % (2**31)) for i in again
            ]
            for i, v in zip(again, generate_validated(self.client, retry, parse, o.max_retries - 1)):
                j = self._judgement(v)
                j.attempts += 1
                j.tokens_in += out[i].tokens_in
                j.tokens_out += out[i].tokens_out
                out[i] = j
        return out

    @staticmethod
    def _judgement(v) -> Judgement:
        common = {"raw": v.result.text, "attempts": v.attempts, "tokens_in": v.tokens_in, "tokens_out": v.tokens_out}
        if not v.ok:
            return Judgement(None, None, v.reason, **common)
        return Judgement([float(v.value["scores"][t]) for t in TRAITS], v.value["rationale"], None, **common)

    def close(self) -> None:
        pass  # the client (and its request cache) is closed by whoever opened it


class ClassifierJudge:
    def __init__(self, options: ClassifierJudgeOptions):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.options = options
        self.device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(options.model, revision=options.revision)
        self.model = AutoModelForSequenceClassification.from_pretrained(options.model, revision=options.revision)
        self.model.to(self.device).eval()
        if self.model.config.num_labels != 5:
            raise DataError(f"judge.model: '{options.model}' has {self.model.config.num_labels} outputs, not 5 traits")
        self.labels = list(options.labels or _id2label_traits(self.model.config) or TRAITS)
        self.order = [self.labels.index(t) for t in TRAITS]  # output position of O, C, E, A, N
        sha = _sha(json.dumps(self.labels), self.model.config.to_json_string(), str(options.max_length))
        self.identity = {"kind": "classifier", "model": options.model, "revision": options.revision, "sha": sha}
        self.name = f"classifier:{options.model}#{sha[:12]}"

    def judge(self, items: list[tuple[str, str]]) -> list[Judgement]:
        import torch

        out: list[Judgement] = []
        limit = min(self.options.max_length, self.tokenizer.model_max_length or self.options.max_length)
        size = self.options.batch_size
        for start in range(0, len(items), size):
            texts = [a for _, a in items[start : start + size]]
            lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]]
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
            with torch.inference_mode():
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits.float().cpu()
            probs = torch.sigmoid(logits).tolist()
            for text, n, p in zip(texts, lengths, probs):
                if not text.strip():
                    out.append(Judgement(None, None, "empty answer", text, tokens_in=n))
                elif n > limit:
                    out.append(Judgement(None, None, f"longer than the classifier's {limit} tokens", text, tokens_in=n))
                else:
                    out.append(Judgement([float(p[i]) for i in self.order], None, None, "", tokens_in=n))
        return out

    def close(self) -> None:
        pass


def _id2label_traits(config) -> list[str] | None:
    """The model's own label order when its labels are the five traits (full names, any case)."""
    names = [str(config.id2label.get(i, "")).strip().lower() for i in range(config.num_labels)]
    return names if sorted(names) == sorted(TRAITS) else None


def load(options: AnyJudgeOptions, client: Any = None) -> LLMJudge | ClassifierJudge:
    """The judge a stage's options describe. An llm judge asks `client`, the opened backend its `backend` names
    (a stage passes `ctx.llm(options.backend)`'s client, behind its request cache); a classifier needs none."""
    if isinstance(options, ClassifierJudgeOptions):
        return ClassifierJudge(options)
    if client is None:
        raise TypeError(f"an llm judge needs an opened client for backend '{options.backend}'")
    return LLMJudge(client, options)
