"""The backend interface and the cached client stages use.

    class Backend(Protocol):
        model_id, revision
        generate(requests: list[GenerationRequest]) -> list[GenerationResult]
        score_choices(requests: list[ScoreRequest]) -> list[ScoreResult]

`CachedBackend` puts the on-disk request cache in front of any backend: a rerun or a resumed build sends the model
only the requests it has not answered before, and `calls` counts what was sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from factory.errors import FactoryError
from factory.llm.cache import RequestCache
from factory.llm.types import GenerationRequest, GenerationResult, ScoreRequest, ScoreResult

_LOADED: dict[str, Any] = {}


class Backend(Protocol):
    model_id: str
    revision: str | None

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]: ...

    def score_choices(self, requests: list[ScoreRequest]) -> list[ScoreResult]: ...


class CachedBackend:
    def __init__(self, backend: Backend, cache: RequestCache | None):
        self.backend = backend
        self.cache = cache
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return self._cached(requests, self.backend.generate, GenerationResult)

    def score_choices(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return self._cached(requests, self.backend.score_choices, ScoreResult)

    def _cached(self, requests, call, result_type):
        keys = [r.key(self.backend.model_id, self.backend.revision) for r in requests]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        first: dict[str, int] = {}
        for i, k in enumerate(keys):  # identical requests in one call are sent once
            if k not in found and k not in first:
                first[k] = i
        todo = list(first.values())
        fresh: dict[str, Any] = {}
        if todo:
            self.calls += len(todo)
            answers = call([requests[i] for i in todo])
            for i, answer in zip(todo, answers):
                fresh[keys[i]] = answer
            if self.cache is not None:
                self.cache.put_many({k: v.to_json() for k, v in fresh.items()})
        out = []
        for i, k in enumerate(keys):
            if k in fresh and first.get(k) == i:
                out.append(fresh[k])
            elif k in fresh:
                out.append(result_type(**{**fresh[k].to_json(), "cached": True}))
            else:
                out.append(result_type(**{**found[k], "cached": True}))
        return out


def has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def load(config: Any, cache_path: Path | None = None) -> CachedBackend:
    """A backend for a recipe's backend config, loaded once per process and wrapped with the request cache."""
    from factory.llm import models

    key = config.model_dump_json()
    if key not in _LOADED:
        if config.type == "transformers":
            from factory.llm.transformers_backend import TransformersBackend

            path, model_id = models.resolve(config.model, has_gpu())
            _LOADED[key] = TransformersBackend(
                path,
                revision=config.revision,
                dtype=config.dtype,
                device=config.device,
                batch_size=config.batch_size,
                model_id=model_id,
            )
        elif config.type == "openai":
            from factory.llm.openai_backend import OpenAIBackend

            _LOADED[key] = OpenAIBackend(
                config.model,
                config.base_url,
                config.api_key_env,
                config.concurrency,
                config.timeout_s,
                config.max_retries,
                config.revision,
            )
        elif config.type == "vllm":
            try:
                from factory.llm.vllm_backend import VLLMBackend

                _LOADED[key] = VLLMBackend(config, config.model or models.DEFAULT_MODEL_ID)
            except ImportError:
                raise FactoryError(
                    "the vllm backend needs the `vllm` extra on a GPU machine: pip install 'persona-factory[vllm]'"
                ) from None
        else:
            raise FactoryError(f"unknown backend type '{config.type}'")
    cache = RequestCache(cache_path) if cache_path is not None else None
    return CachedBackend(_LOADED[key], cache)


def for_stage(ctx: Any, name: str) -> CachedBackend:
    """The recipe backend `name` for a stage, behind the stage's own request cache (`requests.sqlite` in its
    work folder, so a resumed build replays what it already asked)."""
    from factory import registry

    raw = ctx.backends[name]
    config = registry.backend(raw["type"]).model_validate(raw)
    return load(config, Path(ctx.workdir) / "requests.sqlite" if ctx.workdir else None)
