"""Prompt templates: Jinja files rendered in a sandbox with strict undefined variables.

A template can read only the variables it is given (a misspelt one is an error, not an empty string), cannot
reach Python internals, cannot change what it is given (the same facts go to every style's template), and is
stopped with an error past `MAX_ITERATIONS` loop steps or `MAX_CHARS` of output (a template that loops without
bound would otherwise hang the build, or fill memory, on every person). Built-in templates live in the package
(`factory/prompt_templates/`, the repo's `prompts/` folder is a link to it); a recipe may name its own file
instead, whose bytes enter the fingerprint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from factory.errors import DataError

BUILTIN = Path(__file__).resolve().parent / "prompt_templates"
MAX_ITERATIONS = 100_000  # loop steps and range() items per render, nested loops counted in full
MAX_CHARS = 200_000  # a rendered prompt; far past any model's context window
MAX_INT_BITS = 4096  # an integer a template computes (`9 ** 9 ** 9` would never finish)

_steps_left: ContextVar[list[int]] = ContextVar("steps_left")


def _spend(n: int) -> None:
    left = _steps_left.get(None)
    if left is not None:
        left[0] -= n
        if left[0] < 0:
            raise SecurityError(f"more than {MAX_ITERATIONS} loop iterations")


def _guarded(items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        _spend(1)
        yield item


def _range(*args: int) -> range:
    r = range(*args)
    _spend(len(r))
    return r


class _PromptEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with `*` and `**` bounded: `'x' * 10**9` or `9 ** 9 ** 9` would fill memory or never end."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if isinstance(left, int) and isinstance(right, int):
            if operator == "**":
                bits = max(left.bit_length(), 1) * abs(right)
            else:
                bits = left.bit_length() + right.bit_length()
            if bits > MAX_INT_BITS:
                raise SecurityError(f"an integer of more than {MAX_INT_BITS} bits")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_CHARS:
                    raise SecurityError(f"a repeated sequence longer than {MAX_CHARS}")
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    env = _PromptEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True
    )
    env.globals["range"] = _range
    env.globals["_loop_steps"] = _guarded
    return env


def _compile(text: str):
    """The template with every `for` loop's items counted against the render's budget."""
    env = environment()
    tree = env.parse(text)
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Call(nodes.Name("_loop_steps", "load"), [loop.iter], [], None, None)
    return env.from_string(tree)


def builtin(name: str) -> Path:
    path = BUILTIN / name
    if not path.is_file():
        raise DataError(f"no built-in prompt '{name}' (in {BUILTIN})")
    return path


def render(path: Path, **variables) -> str:
    token = _steps_left.set([MAX_ITERATIONS])
    try:
        template = _compile(path.read_text())
        out: list[str] = []
        size = 0
        for part in template.generate(**variables):
            size += len(part)
            if size > MAX_CHARS:
                raise DataError(f"{path}: template error: renders to more than {MAX_CHARS} characters")
            out.append(part)
        return "".join(out).strip()
    except UndefinedError as exc:
        raise DataError(f"{path}: {exc.message}") from None
    except TemplateError as exc:
        raise DataError(f"{path}: template error: {exc}") from None
    except (OverflowError, MemoryError, RecursionError, ValueError, TypeError) as exc:  # from inside the template
        raise DataError(f"{path}: template error: {type(exc).__name__}: {str(exc)[:200]}") from None
    finally:
        _steps_left.reset(token)
