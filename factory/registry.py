"""Short names for stages and backends, resolved lazily so listing or validating imports nothing heavy.

A recipe names a stage by its registry name (`uses: questions`) or, as the one escape hatch for user code, by
an explicit `module:attr` hook (`uses: my_pkg.stages:my_stage`) — the only way a recipe can run code.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from factory.errors import did_you_mean
from factory.hooks import import_object
from factory.stage import StageSpec, spec_from_object

STAGES: dict[str, str] = {
    "meta_personas": "factory.stages.meta_personas",
    "personas": "factory.stages.personas",
    "calibrate": "factory.stages.calibrate",
    "questions": "factory.stages.questions",
    "evaluate": "factory.stages.evaluate",
    "answers": "factory.stages.answers",
    "train_dpo": "factory.stages.train_dpo",
    "preferences": "factory.stages.preferences",
    "trait_control": "factory.stages.trait_control",
    "review": "factory.stages.review",
}

BACKENDS: dict[str, str] = {
    "transformers": "factory.llm.config:TransformersConfig",
    "vllm": "factory.llm.config:VLLMConfig",
    "openai": "factory.llm.config:OpenAIConfig",
}


class UnknownName(LookupError):
    """Raised with a one-line message that ends in a 'did you mean' hint when one exists."""


@cache
def stage(uses: str) -> StageSpec:
    if uses in STAGES:
        return spec_from_object(uses, import_object(STAGES[uses]))
    if ":" in uses:
        try:
            obj = import_object(uses)
        except (ImportError, AttributeError) as exc:
            raise UnknownName(f"cannot import stage hook '{uses}': {exc}") from None
        try:
            return spec_from_object(uses, obj)
        except TypeError as exc:
            raise UnknownName(str(exc)) from None
    raise UnknownName(f"unknown stage '{uses}'{did_you_mean(uses, STAGES)}")


def backend(kind: str) -> Any:
    if kind not in BACKENDS:
        raise UnknownName(f"unknown backend type '{kind}'{did_you_mean(kind, BACKENDS)}")
    return import_object(BACKENDS[kind])
