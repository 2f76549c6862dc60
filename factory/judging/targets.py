"""Big Five targets: named vectors, each person's target, the bands prompts describe, and similarity to a target.

Vectors are (O, C, E, A, N) in [0, 1], the order of `TRAITS`. A target specification is one of:
- `persona`: each person's own trait vector, rounded to two decimals (finer than any judge resolves); people whose
  rounded vectors are equal share one target, named after the preset vector it equals (`Analyst`...) or else
  `vector_90_60_35_25_35` (percentages, the personality study's key). Meta personas drawn with
  `bigfive: {mode: targets, spread: 0}` therefore fall into exactly their preset's targets; census draws give
  (nearly) one target per person.
- a preset name (`mbti_roles`, from `factory.census.bigfive.TARGET_PRESETS`) or a mapping name -> vector:
  each person's target is the named vector nearest (Euclidean) to their own traits, so people drawn around a
  target with a spread still belong to it. The target name is not stored by meta_personas; it is derived here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from factory.census.bigfive import TARGET_PRESETS, TRAITS, bands  # noqa: F401  (re-exported: the judging vocabulary)
from factory.errors import DataError, did_you_mean

Similarity = Literal["exp_mse", "cosine", "neg_mae"]
PERSONA = "persona"


def named_vectors(spec: str | dict[str, list[float]]) -> dict[str, list[float]]:
    """name -> vector of a preset name or an explicit mapping (never 'persona')."""
    if isinstance(spec, dict):
        return {str(k): [float(x) for x in v] for k, v in spec.items()}
    if spec not in TARGET_PRESETS:
        raise DataError(f"unknown target preset '{spec}'{did_you_mean(spec, TARGET_PRESETS)}")
    return {k: list(v) for k, v in TARGET_PRESETS[spec].items()}


def check_vector(v: Sequence[float]) -> list[float]:
    if len(v) != 5 or not all(0.0 <= float(x) <= 1.0 for x in v):
        raise ValueError("a Big Five vector is five numbers in [0, 1] (O, C, E, A, N)")
    return [float(x) for x in v]


def vector_key(v: Sequence[float]) -> str:
    return "vector_" + "_".join(str(round(float(x) * 100)) for x in v)


def preset_name(v: Sequence[float], tol: float = 1e-6) -> str | None:
    """The preset target name whose vector equals `v` (within `tol`), else None."""
    for preset in TARGET_PRESETS.values():
        for name, w in preset.items():
            if all(abs(float(a) - b) <= tol for a, b in zip(v, w)):
                return name
    return None


def assign(traits: np.ndarray, spec: str | dict[str, list[float]]) -> tuple[list[str], dict[str, list[float]]]:
    """Each person's target name (rows of `traits`, n x 5) and the vectors of the names used; see the module doc."""
    traits = np.asarray(traits, dtype=np.float64)
    if spec == PERSONA:
        names, vectors = [], {}
        for row in np.round(traits, 2):
            v = [float(x) for x in row]
            name = preset_name(v, tol=0.005) or vector_key(v)
            names.append(name)
            vectors.setdefault(name, v)
        return names, vectors
    vectors = named_vectors(spec)
    keys = list(vectors)
    mat = np.array([vectors[k] for k in keys])
    nearest = np.argmin(((traits[:, None, :] - mat[None, :, :]) ** 2).sum(-1), axis=1) if len(traits) else []
    return [keys[int(i)] for i in nearest], vectors


def similarity(target: Sequence[float], scores: Sequence[float], kind: Similarity = "exp_mse", alpha: float = 5.0):
    """How close judged `scores` are to `target` (higher is closer); see `similarity_matrix`."""
    return float(similarity_matrix([target], [scores], kind, alpha)[0, 0])


def similarity_matrix(targets, scores, kind: Similarity = "exp_mse", alpha: float = 5.0) -> np.ndarray:
    """Similarity of each of `scores` (n x 5) to each of `targets` (k x 5), as a k x n array.

    exp_mse: exp(-alpha * mean squared error), the study's product of per-trait Gaussians (alpha 5), in [0, 1];
    cosine: cosine of the two vectors (blind to a common scale: 0.2s and 0.8s in the same ratio look alike);
    neg_mae: minus the mean absolute error, in [-1, 0]."""
    t = np.asarray(targets, dtype=np.float64).reshape(-1, 1, 5)
    s = np.asarray(scores, dtype=np.float64).reshape(1, -1, 5)
    if kind == "exp_mse":
        return np.exp(-alpha * ((t - s) ** 2).mean(axis=-1))
    if kind == "cosine":
        norms = np.linalg.norm(t, axis=-1) * np.linalg.norm(s, axis=-1)
        return np.divide((t * s).sum(axis=-1), norms, out=np.zeros(norms.shape), where=norms > 0)
    if kind == "neg_mae":
        return -np.abs(t - s).mean(axis=-1)
    raise ValueError(f"unknown similarity '{kind}'")


def mae(target: Sequence[float], scores: Sequence[float]) -> float:
    return float(np.abs(np.asarray(target, dtype=np.float64) - np.asarray(scores, dtype=np.float64)).mean())


def euclidean(target: Sequence[float], scores: Sequence[float]) -> float:
    return float(np.linalg.norm(np.asarray(target, dtype=np.float64) - np.asarray(scores, dtype=np.float64)))
