"""GPU defaults, decided without a GPU: `dtype: auto` loads bfloat16 weights on CUDA and the checkpoint's dtype on
CPU; a backend or training stage without a model takes the embedded one on any machine."""

from __future__ import annotations

import pytest
import torch

from factory.llm import models
from factory.llm.transformers_backend import weights_dtype


@pytest.mark.parametrize(
    "dtype, device, expected",
    [
        ("auto", "cuda", torch.bfloat16),
        ("auto", "cuda:1", torch.bfloat16),
        ("auto", "cpu", "auto"),
        ("float16", "cuda", torch.float16),
        ("float32", "cuda", torch.float32),
        ("bfloat16", "cpu", torch.bfloat16),
    ],
)
def test_weights_dtype(dtype, device, expected):
    assert weights_dtype(dtype, device) == expected


def test_no_model_means_the_embedded_one_on_any_machine(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "embedded_model_path", lambda: tmp_path / "embedded")
    path, model_id = models.resolve(None)
    assert path == str(tmp_path / "embedded") and model_id.startswith(models.DEFAULT_MODEL_ID)
    assert models.resolve("org/model") == ("org/model", "org/model")
