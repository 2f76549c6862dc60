"""Seeds derived from a parent seed and a key, so randomness depends on what a row is, never on batching."""

from __future__ import annotations

import hashlib
from typing import Any


def derive_seed(seed: int, *key: Any) -> int:
    """A 63-bit seed from a parent seed and a key; stable across processes, platforms and Python versions."""
    text = "\x1f".join([str(seed), *map(str, key)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
