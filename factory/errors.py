"""User-facing errors: each renders as one line naming the field or file at fault, with an exit code.

The CLI prints `error: <message>` and exits with `exit_code`; no traceback reaches the user for these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FactoryError(Exception):
    """A failure the user can fix; `str()` is the whole one-line message."""

    exit_code = 1


class RecipeError(FactoryError):
    """A recipe (or an override) is invalid. `path` is the dotted field path, e.g. `stages.answers.sampling`."""

    exit_code = 2

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        text = f"{path}: {message}" if path else message
        super().__init__(text.replace("\r", "\\r").replace("\n", "\\n"))  # a key with a newline stays one line


class DataError(FactoryError):
    """An input data file (census table, question file, ...) is unreadable or malformed."""

    exit_code = 2


class StageError(FactoryError):
    """A stage failed while running; finished batches are kept and a rerun resumes after them."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a close match exists, else an empty string."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
