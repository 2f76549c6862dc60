"""How a recipe's `inputs:` meet a stage's input roles, checked before anything runs.

A stage declares its roles (`INPUTS = {"people": Needs("person_id", "weight"), ...}`) and every stage declares
the columns it writes (`OUTPUTS`). A recipe either names the roles (`inputs: {people: calibrated}`) or lists
its inputs (`inputs: [people, election]`); a list is matched to the roles by the columns each upstream stage
declares, and must match in exactly one way. Either way each role's needed columns must be among the columns
its upstream declares: a mis-wired recipe fails at `factory validate` with one line naming the stage, the role
and the missing column. A `hub://` input's columns are not known until it is fetched; the runner checks them
then (`check_columns`).
"""

from __future__ import annotations

from itertools import product
from typing import Any

from factory.errors import DataError, RecipeError, did_you_mean
from factory.stage import Columns, Needs

Wiring = dict[str, Any]  # role -> input name (str), or -> list of input names for a `many` role


def missing(needs: Needs, declared: Columns | None) -> list[str]:
    """Needed columns the upstream does not declare (none when its columns are unknown until run time, or when
    the upstream declares an open set whose extra columns may hold them)."""
    if declared is None or declared.open:
        return []
    return [c for c in needs.columns if c not in declared.types]


def assign_roles(
    stage: str, roles: dict[str, Needs], written: list[str] | dict[str, Any], declared: dict[str, Columns | None]
) -> Wiring:
    """role -> input(s). `written` is the recipe's `inputs:` (a list, or a role mapping); `declared` holds each
    input's declared `data` columns (None: not known before it is fetched)."""
    where = f"stages.{stage}.inputs"
    if not roles and written:
        raise RecipeError(where, f"takes no inputs (a source stage), got {len(written)}")
    if isinstance(written, dict):
        chosen: Wiring = {}
        for role, value in written.items():
            if role not in roles:
                raise RecipeError(
                    f"{where}.{role}", f"no input role '{role}'{did_you_mean(role, roles)} (roles: {_names(roles)})"
                )
            if isinstance(value, list) and not roles[role].many:
                raise RecipeError(f"{where}.{role}", f"role '{role}' takes one input, got {len(value)}")
            chosen[role] = list(value) if roles[role].many and isinstance(value, list) else value
            if roles[role].many and not isinstance(value, list):
                chosen[role] = [value]
    else:
        chosen = _match(stage, roles, written, declared)
    for role, needs in roles.items():
        sources = chosen.get(role)
        if not sources:
            if not needs.optional:
                raise RecipeError(where, f"role '{role}' is not wired (it needs {_cols(needs)})")
            continue
        for src in sources if needs.many else [sources]:
            absent = missing(needs, declared.get(src))
            if absent:
                raise RecipeError(
                    f"{where}.{role}",
                    f"'{src}' does not write column '{absent[0]}' that role '{role}' needs ({_cols(needs)})",
                )
    return {r: chosen[r] for r in roles if chosen.get(r)}


def _match(stage: str, roles: dict[str, Needs], written: list[str], declared: dict[str, Any]) -> Wiring:
    names = list(roles)
    found: list[Wiring] = []
    for picked in product(names, repeat=len(written)):
        counts = {r: picked.count(r) for r in names}
        if any(counts[r] > 1 and not roles[r].many for r in names):
            continue
        if any(counts[r] == 0 and not roles[r].optional for r in names):
            continue
        if any(missing(roles[r], declared.get(src)) for r, src in zip(picked, written)):
            continue
        wiring: Wiring = {}
        for r, src in zip(picked, written):
            if roles[r].many:
                wiring.setdefault(r, []).append(src)
            else:
                wiring[r] = src
        found.append(wiring)
    if len(found) == 1:
        return found[0]
    where = f"stages.{stage}.inputs"
    if len(found) > 1:
        shown = " or ".join("{" + ", ".join(f"{r}: {s}" for r, s in w.items()) + "}" for w in found[:2])
        raise RecipeError(where, f"the inputs fit the roles in more than one way; name them, e.g. inputs: {shown}")
    return _explain(stage, roles, written, declared)


def _explain(stage: str, roles: dict[str, Needs], written: list[str], declared: dict[str, Any]) -> Wiring:
    """No wiring fits: say why in one line (too many or too few inputs, or a role no input can fill)."""
    where = f"stages.{stage}.inputs"
    required = [r for r, n in roles.items() if not n.optional]
    if not any(n.many for n in roles.values()) and len(written) > len(roles):
        raise RecipeError(where, f"takes at most {len(roles)} input(s) ({_names(roles)}), got {len(written)}")
    if len(written) < len(required):
        raise RecipeError(
            where,
            f"needs {len(required)} input(s) ({', '.join(required)}), got {len(written)}"
            + (f": {', '.join(written)}" if written else ""),
        )
    for role in required:
        gaps = [(missing(roles[role], declared.get(s)), s) for s in written]
        if all(absent for absent, _ in gaps):
            absent, src = min(gaps, key=lambda g: len(g[0]))
            raise RecipeError(
                f"{where}.{role}",
                f"no input fits role '{role}': the closest, '{src}', does not write column '{absent[0]}' "
                f"({role} needs {_cols(roles[role])})",
            )
    for src in written:
        if all(missing(n, declared.get(src)) for n in roles.values()):
            role, needs = min(roles.items(), key=lambda rn: len(missing(rn[1], declared.get(src))))
            raise RecipeError(
                where,
                f"'{src}' fits no role: for role '{role}' it lacks column '{missing(needs, declared.get(src))[0]}'",
            )
    raise RecipeError(where, f"the inputs fit the roles ({_names(roles)}) in no way; name them (role: stage)")


def _names(roles: dict[str, Needs]) -> str:
    return ", ".join(roles) or "none"


def _cols(needs: Needs, shown: int = 6) -> str:
    if not needs.columns:
        return "no particular column"
    more = len(needs.columns) - shown
    return ", ".join(needs.columns[:shown]) + (f" and {more} more" if more > 0 else "")


def sources(wiring: Wiring) -> list[tuple[str, str]]:
    """(role, input name) pairs of a wiring, a `many` role once per input."""
    return [(r, s) for r, v in wiring.items() for s in (v if isinstance(v, list) else [v])]


def check_columns(stage: str, role: str, source: str, needs: Needs, columns: list[str]) -> None:
    """At run time, for inputs whose columns were not known at validate time (hub:// datasets)."""
    absent = [c for c in needs.columns if c not in columns]
    if absent:
        raise DataError(
            f"stages.{stage}.inputs.{role}: '{source}' has no column '{absent[0]}' (role '{role}' needs "
            f"{_cols(needs)})"
        )
