"""Prompt templates: Jinja files rendered in a sandbox with strict undefined variables.

A template can read only the variables it is given (a misspelt one is an error, not an empty string) and cannot
reach Python internals. Built-in templates live in the package (`factory/prompt_templates/`, the repo's
`prompts/` folder is a link to it); a recipe may name its own file instead, whose bytes enter the fingerprint.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from factory.errors import DataError

BUILTIN = Path(__file__).resolve().parent / "prompt_templates"


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True
    )


def builtin(name: str) -> Path:
    path = BUILTIN / name
    if not path.is_file():
        raise DataError(f"no built-in prompt '{name}' (in {BUILTIN})")
    return path


def render(path: Path, **variables) -> str:
    try:
        template = environment().from_string(path.read_text())
        return template.render(**variables).strip()
    except UndefinedError as exc:
        raise DataError(f"{path}: {exc.message}") from None
    except TemplateError as exc:
        raise DataError(f"{path}: template error: {exc}") from None
