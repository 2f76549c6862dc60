"""Big Five traits: the personality-populations study's conditional multivariate normal, vectorised and seeded.

Mean of each trait = intercept + coefficients . standardised (age, sex [1 male, 2 female], US-born [1/0]);
residuals ~ MVN(0, the fitted 5x5 covariance, order A, E, O, C, N); scores clipped to [0, 1] (the original did
not clip; draws outside are rare, about 3 sigma). Fit on 245,850 IPIP-NEO internet respondents: a young,
self-selected sample, which the card says.

`BigFiveOptions` is the `bigfive:` option block (census draws, or vectors around targets such as the
`TARGET_PRESETS`), shared by meta_personas, calibrate and the judging of preference pairs.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, Field, model_validator

from factory.errors import did_you_mean
from factory.options import OptionBlock
from factory.resources import data_path

TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")  # OCEAN, output order
# the personality study's rubric bands: upper bound (exclusive) -> name
BANDS = ((0.2, "Very low"), (0.4, "Low"), (0.6, "Medium"), (0.8, "High"), (float("inf"), "Very high"))


def bands(vector) -> list[tuple[str, str, float]]:
    """(Trait, band, value) per trait of an (O, C, E, A, N) vector, rounded to two decimals, as prompts show them."""
    out = []
    for t, v in zip(TRAITS, vector):
        v = round(float(v), 2)
        out.append((t.capitalize(), next(name for top, name in BANDS if v < top), v))
    return out


_FILE_KEYS = {
    "openness": "openness_score",
    "conscientiousness": "conscientiousness_score",
    "extraversion": "extraversion_score",
    "agreeableness": "agreeable_score",
    "neuroticism": "neuroticism_score",
}


@lru_cache(maxsize=1)
def model() -> dict:
    spec = json.loads(data_path("bigfive", "big_five_conditional_mvn.json").read_text())
    order = spec["trait_order_of_covariance"]
    perm = [order.index(_FILE_KEYS[t]) for t in TRAITS]
    cov = np.asarray(spec["residual_covariance"])[np.ix_(perm, perm)]
    return {
        "mean": np.asarray(spec["scaler"]["mean"]),
        "scale": np.asarray(spec["scaler"]["scale"]),
        "intercept": np.array([spec["traits"][_FILE_KEYS[t]]["intercept"] for t in TRAITS]),
        "coef": np.array([spec["traits"][_FILE_KEYS[t]]["coef_on_standardized_features"] for t in TRAITS]),
        "chol": np.linalg.cholesky(cov),
        "cov": cov,
    }


def conditional_mean(age: np.ndarray, male: np.ndarray, us_born: np.ndarray) -> np.ndarray:
    m = model()
    x = np.stack(
        [age.astype(np.float32), np.where(male, 1.0, 2.0).astype(np.float32), us_born.astype(np.float32)], axis=1
    )
    z = (x - m["mean"].astype(np.float32)) / m["scale"].astype(np.float32)
    return m["intercept"].astype(np.float32) + z @ m["coef"].T.astype(np.float32)


def sample(age: np.ndarray, male: np.ndarray, us_born: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 5) scores in OCEAN order, clipped to [0, 1]."""
    mu = conditional_mean(age, male, us_born)
    noise = rng.standard_normal(mu.shape, dtype=np.float32) @ model()["chol"].T.astype(np.float32)
    return np.clip(mu + noise, 0.0, 1.0)


def from_targets(vectors: np.ndarray, spread: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Scores around given target vectors (assigned round-robin), with an isotropic spread (0 = exact)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    picks = vectors[np.arange(n) % len(vectors)]
    return np.clip(picks + spread * rng.standard_normal(picks.shape), 0.0, 1.0)


TARGET_PRESETS = {
    # the personality-populations study's four target groups, (O, C, E, A, N)
    "mbti_roles": {
        "Analyst": [0.90, 0.60, 0.35, 0.25, 0.35],
        "Diplomat": [0.90, 0.50, 0.45, 0.90, 0.60],
        "Sentinel": [0.25, 0.90, 0.50, 0.65, 0.40],
        "Explorer": [0.40, 0.25, 0.80, 0.65, 0.25],
    },
}


def _unit_vector(v: list[float]) -> list[float]:
    if len(v) != 5 or not all(0.0 <= x <= 1.0 for x in v):
        raise ValueError("a Big Five target is five numbers in [0, 1] (O, C, E, A, N)")
    return v


class BigFiveOptions(OptionBlock):
    mode: Literal["census", "targets", "none"] = Field(
        "census", description="census: conditional normal on age, sex and US birth; targets: around given vectors"
    )
    targets: dict[str, Annotated[list[float], AfterValidator(_unit_vector)]] | str | None = Field(
        None, description="name -> [O, C, E, A, N], or a preset name ('mbti_roles'); assigned round-robin"
    )
    spread: float = Field(0.0, ge=0, le=0.5, description="standard deviation around target vectors")

    @model_validator(mode="after")
    def _targets(self) -> BigFiveOptions:
        if self.mode == "targets":
            if self.targets is None:
                raise ValueError("mode 'targets' needs targets (a mapping or a preset name)")
            if isinstance(self.targets, str) and self.targets not in TARGET_PRESETS:
                raise ValueError(f"unknown preset '{self.targets}'{did_you_mean(self.targets, TARGET_PRESETS)}")
        return self

    def vectors(self) -> tuple[list[str], np.ndarray]:
        t = TARGET_PRESETS[self.targets] if isinstance(self.targets, str) else (self.targets or {})
        return list(t), np.array(list(t.values()))
