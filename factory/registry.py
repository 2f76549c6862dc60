"""Short names for stages and backends, resolved lazily so listing or validating imports nothing heavy.

A recipe names a stage by its registry name (`uses: questions`) or, as the one escape hatch for user code, by
an explicit `module:attr` hook (`uses: my_pkg.stages:my_stage`) — the only way a recipe can run code.
"""

from __future__ import annotations

import re
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
    "dataset": "factory.stages.dataset",
    "audit": "factory.stages.audit",
}

BACKENDS: dict[str, str] = {
    "transformers": "factory.llm.config:TransformersConfig",
    "vllm": "factory.llm.config:VLLMConfig",
    "openai": "factory.llm.config:OpenAIConfig",
}


class UnknownName(LookupError):
    """Raised with a one-line message that ends in a 'did you mean' hint when one exists."""


_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
HOOK = re.compile(f"{_DOTTED}:{_DOTTED}")  # `package.module:attr`, nothing else is ever imported


@cache
def stage(uses: str) -> StageSpec:
    if uses in STAGES:
        return spec_from_object(uses, import_object(STAGES[uses]))
    if ":" in uses:
        if not HOOK.fullmatch(uses):
            raise UnknownName(f"stage hook '{uses[:100]}' is not of the form package.module:attr")
        try:
            obj = import_object(uses)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 -- user code on import: sys.exit, syntax errors, anything
            raise UnknownName(f"cannot import stage hook '{uses}': {_why(exc)}") from None
        try:
            return spec_from_object(uses, obj)
        except TypeError as exc:
            raise UnknownName(str(exc)) from None
        except Exception as exc:  # an Options or VERSION that is not what a stage needs
            raise UnknownName(f"stage hook '{uses}': {_why(exc)}") from None
    raise UnknownName(f"unknown stage '{uses[:100]}'{did_you_mean(uses, STAGES)}")


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    if isinstance(exc, (ImportError, AttributeError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def backend(kind: str) -> Any:
    if kind not in BACKENDS:
        raise UnknownName(f"unknown backend type '{kind}'{did_you_mean(kind, BACKENDS)}")
    return import_object(BACKENDS[kind])
