"""Publish profiles: YAML files saying where repos go, their visibility and licence (the repo's `push/` folder).

    target: folder          # folder: git repos on disk laid out like Hub repos; hub: huggingface.co
    path: hub               # folder: relative paths are under runs/<recipe>/
    license: cc-by-4.0

    target: hub
    namespace: my-org       # user or organisation owning the repos
    private: true

A profile never holds a token: the Hub token comes from `HF_TOKEN` or `hf auth login`, read by `huggingface_hub`
at request time and never written anywhere by the factory. Built-in profiles ship in the package
(`factory/push_profiles/`, linked from the repo's `push/`); a recipe may name its own file instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from factory.errors import RecipeError, did_you_mean
from factory.options import OptionBlock, operational

BUILTIN = Path(__file__).resolve().parent / "push_profiles"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}


class Profile(OptionBlock):
    target: Literal["folder", "hub"] = Field(..., description="folder (git repos on disk) or hub (huggingface.co)")
    path: str | None = Field(
        None, description="folder target: root of the repos; a relative path is under runs/<recipe>/"
    )
    namespace: str | None = Field(
        None, description="hub: user or organisation owning the repos; folder: optional sub-folder of `path`"
    )
    private: bool = Field(True, description="hub: create repos private (an existing repo keeps its visibility)")
    license: str = Field("cc-by-4.0", description="licence in the cards' metadata (an SPDX-style Hub licence id)")
    tags: list[str] = Field(default_factory=list, description="extra card tags")
    max_shard_size: str = Field("500MB", description="largest parquet shard (e.g. 500MB, 2GB)")
    endpoint: str | None = operational(None, description="hub: another endpoint (a mirror, a test server)")

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if "token" in str(key).lower() or "password" in str(key).lower():
                    raise ValueError(f"'{key}': a profile never holds a secret; set HF_TOKEN or run `hf auth login`")
        return data

    @field_validator("max_shard_size")
    @classmethod
    def _size(cls, v: str) -> str:
        shard_bytes(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if self.target == "hub" and not self.namespace:
            raise ValueError("target 'hub' needs a namespace (the user or organisation that owns the repos)")
        if self.target == "folder" and not self.path:
            raise ValueError("target 'folder' needs a path (relative paths are under runs/<recipe>/)")
        return self

    def root(self, runs_dir: Path, recipe: str) -> Path:
        """Folder target: where repos go."""
        path = Path(self.path or "hub").expanduser()
        return path if path.is_absolute() else Path(runs_dir) / recipe / path


def shard_bytes(size: str) -> int:
    m = _SIZE_RE.match(str(size))
    if not m:
        raise ValueError(f"'{size}' is not a size (e.g. 500MB, 2GB)")
    n = int(float(m.group(1)) * _UNITS[(m.group(2) or "B").upper()])
    if n < 1:
        raise ValueError(f"'{size}' is not a size above zero")
    return n


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN.glob("*.yaml"))


def profile_path(name: str, base_dir: Path) -> Path:
    """A profile name (`local`, `hub`) or a path to a profile YAML (relative to the recipe's folder)."""
    if name.endswith((".yaml", ".yml")) or "/" in name or "\\" in name:
        path = Path(name).expanduser()
        return path if path.is_absolute() else Path(base_dir) / path
    path = BUILTIN / f"{name}.yaml"
    if not path.is_file():
        raise RecipeError(
            "publish.profile",
            f"unknown profile '{name}'{did_you_mean(name, builtin_names())} (built in: {', '.join(builtin_names())};"
            " or give a path to a profile YAML)",
        )
    return path


def load_profile(name: str, base_dir: Path | str = ".") -> Profile:
    """Read and validate a profile; one-line `RecipeError` (field path `publish.profile`) on any problem."""
    path = profile_path(name, Path(base_dir))
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError("publish.profile", f"{path}: no such profile file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError("publish.profile", f"{path}: cannot read profile ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise RecipeError("publish.profile", f"{path}: a profile is a YAML mapping (target, path or namespace, ...)")
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key{did_you_mean(str(err['loc'][-1]), Profile.model_fields)}"
        raise RecipeError("publish.profile", f"{path}: {where + ': ' if where else ''}{msg}") from None
