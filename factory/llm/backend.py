"""Loading a backend for a recipe's backend config, and the cached client stages use.

The interface itself (`Backend`, `Follow`, `in_rounds`) lives in `factory.llm.types`, apart from this factory that
imports every implementation.

`CachedBackend` puts the on-disk request cache in front of any backend: a rerun or a resumed build sends the model
only the requests it has not answered before, each answer is stored as soon as it finishes, and `calls` counts what
was sent.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from factory.errors import FactoryError
from factory.llm.cache import RequestCache
from factory.llm.structured import encodable
from factory.llm.types import (
    Backend,
    Follow,
    GenerationRequest,
    GenerationResult,
    ScoreRequest,
    ScoreResult,
    score_each,
)

_LOADED: dict[str, Any] = {}


class CachedBackend:
    def __init__(self, backend: Backend, cache: RequestCache | None):
        self.backend = backend
        self.cache = cache
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def generate(self, requests: list[GenerationRequest], follow: Follow | None = None) -> list[GenerationResult]:
        """Cached answers resolve at once (and their follow-ups are looked up in turn); the rest go to the backend
        in one run, each stored as it finishes. Identical requests in flight are sent once."""
        model, revision = self.backend.model_id, self.backend.revision
        requests = list(requests)
        out: dict[int, GenerationResult] = {}
        waiting: dict[str, list[int]] = {}  # key -> indices (here) of identical requests sent once
        sent: list[str] = []  # the backend's request index -> key

        def resolve(i: int, result: GenerationResult) -> list[int]:
            out[i] = result
            more = follow(i, result) if follow is not None else []
            requests.extend(more)
            return list(range(len(requests) - len(more), len(requests)))

        def submit(indices: list[int]) -> list[GenerationRequest]:
            """What of `indices` the backend must run; cached ones resolve now, and so do their follow-ups."""
            to_send: list[GenerationRequest] = []
            while indices:
                keys = [requests[i].key(model, revision) for i in indices]
                found = self.cache.get_many([k for k in keys if k not in waiting]) if self.cache is not None else {}
                later: list[int] = []
                for i, k in zip(indices, keys):
                    if k in waiting:
                        waiting[k].append(i)
                    elif k in found:
                        later += resolve(i, GenerationResult(**{**found[k], "cached": True}))
                    else:
                        waiting[k] = [i]
                        sent.append(k)
                        to_send.append(requests[i])
                indices = later
            self.calls += len(to_send)
            return to_send

        def finished(j: int, result: GenerationResult) -> list[GenerationRequest]:
            key = sent[j]
            # a lone surrogate (an API's JSON can carry one) cannot be stored as UTF-8: in the cache, or as the raw
            # text of a failure row, it would crash the batch, and a cache that kept it would replay the crash
            result = replace(result, text=encodable(result.text))
            if self.cache is not None and result.finish_reason != "error":  # an engine error may pass: ask again
                self.cache.put_many({key: result.to_json()})
            more: list[int] = []
            for n, i in enumerate(waiting.pop(key)):
                more += resolve(i, result if n == 0 else GenerationResult(**{**result.to_json(), "cached": True}))
            return submit(more)

        first = submit(list(range(len(requests))))
        if first:
            self.backend.generate(first, finished)
        return [out[i] for i in range(len(requests))]

    def score_choices(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
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
            answers = score_each(self.backend.score_choices, [requests[i] for i in todo])
            for i, answer in zip(todo, answers):
                fresh[keys[i]] = answer
            if self.cache is not None:  # a failed score is asked again next time
                self.cache.put_many({k: v.to_json() for k, v in fresh.items() if v.error is None})
        out = []
        for i, k in enumerate(keys):
            if k in fresh and first.get(k) == i:
                out.append(fresh[k])
            elif k in fresh:
                out.append(ScoreResult(**{**fresh[k].to_json(), "cached": True}))
            else:
                out.append(ScoreResult(**{**found[k], "cached": True}))
        return out


def release(config: Any) -> bool:
    """Unload the engine `load` holds for a backend config, and give its GPU memory back (the next model, or a
    training stage, needs it): the engine's own `close` (vLLM's shutdown), a collection, CUDA's cached blocks.
    False when none was loaded."""
    engine = _LOADED.pop(config.model_dump_json(), None)
    if engine is None:
        return False
    close = getattr(engine, "close", None)
    if close is not None:
        close()
    del engine
    gc.collect()
    torch = sys.modules.get("torch")  # never imported just to free memory
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return True


def load(config: Any, cache_path: Path | None = None) -> CachedBackend:
    """A backend for a recipe's backend config, loaded once per process and wrapped with the request cache."""
    from factory.llm import models

    key = config.model_dump_json()
    if key not in _LOADED:
        if config.type == "transformers":
            from factory.llm.transformers_backend import TransformersBackend

            path, model_id = models.resolve(config.model)
            _LOADED[key] = TransformersBackend(
                path,
                revision=config.revision,
                dtype=config.dtype,
                device=config.device,
                batch_size=config.batch_size,
                model_id=model_id,
                jump_forward=config.jump_forward,
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
                config.tokenizer,
            )
        elif config.type == "vllm":
            try:
                from factory.llm.vllm_backend import VLLMBackend

                _LOADED[key] = VLLMBackend.start(config, config.model or models.DEFAULT_MODEL_ID)
            except ImportError:
                raise FactoryError(
                    "the vllm backend needs the `vllm` extra on a GPU machine: pip install 'persona-factory[vllm]'"
                ) from None
        else:
            raise FactoryError(f"unknown backend type '{config.type}'")
    cache = RequestCache(cache_path) if cache_path is not None else None
    return CachedBackend(_LOADED[key], cache)
