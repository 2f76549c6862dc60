"""Typed configs of the named LLM endpoints a recipe declares under `backends:`.

Model identity (id, revision, dtype) is semantic and enters the fingerprint of every stage that uses the backend;
where and how fast it runs (device, batch size, URL, concurrency, parallelism) is operational and does not.
Secrets never appear here: `api_key_env` names the environment variable that holds the key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from factory.options import OptionBlock, operational


class BackendConfig(OptionBlock):
    type: str
    model: str | None = Field(None, description="Hub model id or local path; None means the embedded default model")
    revision: str | None = Field(None, description="model revision (commit, tag or branch); pin it for reproducibility")


class TransformersConfig(BackendConfig):
    """Hugging Face transformers on CPU or GPU: batched generation with chat templates, choice scoring."""

    type: Literal["transformers"] = "transformers"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; bfloat16 on CPU halves what a step reads (keys and values stay float32)"
    )
    jump_forward: bool = Field(
        True, description="feed the text a grammar forces (JSON keys, enum tails) in one pass instead of sampling it"
    )
    device: str | None = operational(None, description="'cpu', 'cuda', 'cuda:1'...; None picks the GPU if present")
    batch_size: int = operational(
        8, description="prompts per forward pass; higher is faster and uses more memory", ge=1
    )


class VLLMConfig(BackendConfig):
    """vLLM offline engine on GPUs: prefix caching, structured outputs, tensor parallel (extra `vllm`); replicas
    for data parallelism come from the Ray executor (`executor: {backends: {name: {replicas: N}}}`)."""

    type: Literal["vllm"] = "vllm"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_model_len: int | None = Field(None, description="context length cap; lower saves KV-cache memory", ge=1)
    tensor_parallel_size: int = operational(1, description="GPUs one model is split over", ge=1)
    gpu_memory_utilization: float = operational(0.9, description="share of GPU memory vLLM may take", gt=0, le=1)
    enable_prefix_caching: bool = operational(True, description="reuse KV cache of shared prompt prefixes")
    chunk_size: int = operational(
        512, description="requests per engine call; each call's answers are cached when it returns", ge=1
    )


class OpenAIConfig(BackendConfig):
    """Any OpenAI-compatible server (`vllm serve`, `transformers serve`, hosted APIs) with retries and backoff."""

    type: Literal["openai"] = "openai"
    model: str = Field(..., description="model name the server expects")
    tokenizer: str | None = Field(
        None,
        description="Hub id or folder of the served model's tokenizer, for logprob scoring; default: `model`",
        json_schema_extra={"fingerprint": "omit_if_none"},
    )
    base_url: str = operational("http://127.0.0.1:8000/v1", description="server URL")
    api_key_env: str | None = operational(
        "OPENAI_API_KEY", description="environment variable holding the API key (the key itself is never stored)"
    )
    concurrency: int = operational(8, description="requests in flight", ge=1)
    timeout_s: float = operational(120.0, description="per-request timeout in seconds", gt=0)
    max_retries: int = operational(4, description="retries with exponential backoff on errors and 429/5xx", ge=0)
