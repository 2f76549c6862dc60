"""The layering rule, read from the import graph (every `import` in factory/, at module level or inside functions).

Floors, from the ground up (README, Layout); a module imports only from its own floor or below:

    1 ground     errors, options, seeds, hooks, resources, prompts, store, fingerprint, hub_inputs, profiles
    2 domain     census/ questions/ llm/ answers/ personas/ judging/ training/ evaluate/ review/ external/
    3 contract   stage, wiring, registry, recipe
    4 stages     stages/ (thin adapters: options in, domain calls, rows out)
    5 runner     runner, executor, progress, ray_executor, ray_pool
    6 top        publish/ commands/ cli, __main__

Besides: domain packages never import `store` (stages see finished inputs through `ctx.upstream`); no stage imports
another stage; and the graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "factory"

FLOORS = {
    1: ["factory", "errors", "options", "seeds", "hooks", "resources", "prompts", "store", "fingerprint", "hub_inputs",
        "profiles"],
    2: ["census", "questions", "llm", "answers", "personas", "judging", "training", "evaluate", "review", "external"],
    3: ["stage", "wiring", "registry", "recipe"],
    4: ["stages"],
    5: ["runner", "executor", "progress", "ray_executor", "ray_pool"],
    6: ["publish", "commands", "cli", "__main__"],
}
DOMAIN = FLOORS[2]


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, set[str]]:
    """module -> the factory modules it imports (anywhere in the file)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
            else:
                continue
            for name in names:
                target = _resolve(name) if name.split(".")[0] == "factory" else ""
                if target and target != module:
                    graph[module].add(target)
    return graph


def floor_of(module: str) -> tuple[int, str]:
    """(floor, top-level part) of a module: factory.census.ipf -> (2, 'census')."""
    part = module.split(".")[1] if "." in module else "factory"
    for floor, parts in FLOORS.items():
        if part in parts:
            return floor, part
    raise AssertionError(f"{module}: not on any floor; add '{part}' to FLOORS here and to the README's Layout")


def test_every_module_is_on_a_floor():
    for module in MODULES:
        floor_of(module)


def test_no_module_imports_a_higher_floor():
    upward = []
    for module, targets in import_graph().items():
        for target in targets:
            if floor_of(target)[0] > floor_of(module)[0]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that run up the floors: " + "; ".join(sorted(upward))


def test_domain_packages_never_import_the_store():
    bad = [
        f"{m} -> {t}"
        for m, targets in import_graph().items()
        if floor_of(m)[1] in DOMAIN
        for t in targets
        if t == "factory.store"
    ]
    assert not bad, "; ".join(bad)


def test_no_stage_imports_another_stage():
    bad = [
        f"{m} -> {t}"
        for m, targets in import_graph().items()
        if m.startswith("factory.stages.")
        for t in targets
        if t.startswith("factory.stages.")
    ]
    assert not bad, "; ".join(bad)


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_graph_reader_sees_imports_inside_functions(tmp_path):
    """The rule would rot silently if lazy imports (inside functions) were not read: check one known lazy import."""
    assert "factory.llm.backend" in import_graph()["factory.stage"]


def test_no_file_is_longer_than_800_lines():
    lines = {str(p.relative_to(ROOT.parent)): len(p.read_text().splitlines()) for p in MODULES.values()}
    assert not {p: n for p, n in lines.items() if n > 800}
