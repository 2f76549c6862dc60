"""Paths of the data shipped inside the package (`factory/data/`, see its README for provenance)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(*parts: str) -> Path:
    path = Path(str(resources.files("factory") / "data")).joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"packaged data file missing: factory/data/{'/'.join(parts)}")
    return path
