"""`module:attr` hooks: the one way a recipe names user code (a stage), imported only when asked."""

from __future__ import annotations

import functools
import importlib
from typing import Any


def import_object(path: str) -> Any:
    """Import `package.module` or `package.module:attr` (`attr` may be dotted: `module:Class.method`)."""
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    return functools.reduce(getattr, attr.split("."), module) if attr else module
