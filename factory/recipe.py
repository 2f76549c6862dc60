"""Recipes: YAML validated into typed models, with `${key.path}` interpolation and `key=value` overrides.

    name: quickstart            # runs/<name>/... holds every output of this recipe
    version: 1
    seed: 0                     # every stage derives its own seed from this and its name
    vars: {n_questions: 40}     # free values for ${vars.x} references
    backends: {small: {type: transformers}}
    stages:
      questions: {uses: questions, sets: [election, opinionqa], sample: "${vars.n_questions}"}

Any mistake raises a `RecipeError` whose message is one line naming the exact field path, e.g.
`stages.answers.samplng: unknown key (did you mean 'sampling'?)`. Nothing heavy is imported here, so
`factory validate` is instant.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from factory import hub_inputs, registry
from factory.errors import RecipeError, did_you_mean
from factory.hub_inputs import HubRef
from factory.llm.config import BackendConfig
from factory.options import OptionBlock, StageOptions, backend_refs
from factory.seeds import derive_seed
from factory.stage import StageSpec, option_models
from factory.wiring import assign_roles

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # names become folder and repo names: short, and nothing after them
_NAME_RE = re.compile(NAME)
_RESOLVER_RE = re.compile(r"\$\{[^}]*:")


class PublishConfig(OptionBlock):
    """Where `build` publishes at its end and `factory push` publishes (see `factory/publish/push.py`).

    Not a stage option: publishing never changes a fingerprint."""

    profile: str = Field("local", description="a profile under push/ (local, hub) or a path to a profile YAML")
    layout: Literal["per_recipe", "per_stage"] = Field(
        "per_recipe", description="one dataset repo with a config per stage, or one repo per stage"
    )
    stages: list[str] | None = Field(None, description="stages to publish; default all")
    repo: str | None = Field(
        None, pattern=NAME, description="repo name (no namespace); default the recipe's name; per_stage: <repo>-<stage>"
    )


class StageResources(OptionBlock):
    """What one batch of a stage asks of a Ray cluster (one Ray task per batch)."""

    num_cpus: float = Field(1.0, ge=0, description="CPUs a batch task reserves")
    num_gpus: float = Field(0.0, ge=0, description="GPUs a batch task reserves")


class ReplicaResources(OptionBlock):
    """A backend's replicas on a Ray cluster: each is an actor holding one engine for a whole stage."""

    replicas: int = Field(1, ge=1, description="engine replicas (data parallelism); requests go to the free ones")
    num_cpus: float | None = Field(
        None, ge=0, description="CPUs each replica reserves (its torch threads on a CPU); default: one replica of a "
        "transformers backend on CPU takes as many as a local build's torch uses (so the bytes match), else 1",
    )  # fmt: skip
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs each replica reserves; default: vllm's tensor_parallel_size, else none"
    )


class ExecutorConfig(OptionBlock):
    """How and where the stages run (`factory build --executor/--address` override it).

    Operational only: no fingerprint reads it, so a cluster build and a local build share their outputs."""

    type: Literal["local", "ray"] = Field("local", description="local: this process; ray: a Ray cluster")
    address: str | None = Field(
        None, description="Ray address: 'auto', 'ray://host:10001', 'host:6379'; none starts a local cluster"
    )
    max_retries: int = Field(3, ge=0, description="re-runs of a batch (or replacements of a replica) lost to a fault")
    batches_in_flight: int = Field(
        1, ge=1, description="LLM stages: batches the driver runs at once; more keeps replicas busy across batch "
        "ends, but a request repeated in two batches may then be computed beside other requests (last-bit changes "
        "in logprob scores)",
    )  # fmt: skip
    stages_in_flight: int = Field(
        4, ge=1, description="ray: independent stages built at the same time (LLM stages still one at a time, each "
        "on its backend's whole pool)",
    )  # fmt: skip
    stages: dict[str, StageResources] = Field(default_factory=dict, description="per-stage batch resources")
    backends: dict[str, ReplicaResources] = Field(default_factory=dict, description="per-backend replicas")


class _TopLevel(OptionBlock):
    name: str = Field(..., pattern=NAME, description="recipe name; outputs go under runs/<name>/")
    version: int | str = Field(1, description="recipe version, recorded in manifests and cards")
    seed: int = Field(0, description="root seed; each stage derives its own from it", ge=0, le=2**63 - 1, strict=True)
    description: str = ""
    vars: dict[str, Any] = Field(default_factory=dict, description="free values for ${vars.x} interpolation")
    backends: dict[str, Any] = Field(default_factory=dict, description="named LLM endpoints")
    stages: dict[str, Any] = Field(..., min_length=1, description="stage name -> {uses, inputs, options...}")
    publish: PublishConfig | None = None
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, description="operational: where stages run")


@dataclass
class StageEntry:
    name: str
    uses: str
    inputs: list[str]
    options: StageOptions
    spec: StageSpec
    hub: dict[str, HubRef] = field(default_factory=dict)  # inputs read from published datasets, by written name
    roles: dict[str, Any] = field(default_factory=dict)  # role -> the input (stage or hub:// URL); a list for many
    named_roles: bool = False  # the recipe named the roles (`inputs: {role: stage}`) rather than listing stages

    def stage_inputs(self) -> list[str]:
        """Inputs that are stages of the recipe (not hub:// datasets)."""
        return [i for i in self.inputs if i not in self.hub]


@dataclass
class Recipe:
    name: str
    version: int | str
    seed: int
    description: str
    vars: dict[str, Any]
    backends: dict[str, BackendConfig]
    stages: dict[str, StageEntry]
    publish: PublishConfig | None
    path: Path
    order: list[str] = field(default_factory=list)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def stage_seed(self, stage: str) -> int:
        return derive_seed(self.seed, "stage", stage)

    def downstream(self, stage: str) -> list[str]:
        """`stage` and every stage that reads from it, directly or not, in build order."""
        hit = {stage}
        for name in self.order:
            if any(i in hit for i in self.stages[name].stage_inputs()):
                hit.add(name)
        return [n for n in self.order if n in hit]

    def upstream(self, stage: str) -> list[str]:
        """Every stage `stage` reads from, directly or not, in build order (not including itself)."""
        need: set[str] = set()
        todo = self.stages[stage].stage_inputs()
        while todo:
            s = todo.pop()
            if s not in need:
                need.add(s)
                todo += self.stages[s].stage_inputs()
        return [n for n in self.order if n in need]


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, interpolate, override and validate a recipe; raise `RecipeError` on the first problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecipeError("", f"{path}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError("", f"{path}: cannot read recipe ({exc})") from None
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError("", f"{where}: invalid YAML: {problem}") from None
    except _Refused as exc:
        raise RecipeError("", f"{path}:{exc.mark.line + 1}:{exc.mark.column + 1}: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError("", f"{path}: a recipe must be a YAML mapping (name, seed, stages, ...)")
    data = resolve(data, overrides)
    return validate(data, base_dir=path.resolve().parent, path=path)


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError("", f"override '{item}': expected key=value, e.g. stages.questions.sample=20")
    if not all(_NAME_RE.fullmatch(part) or part.isdigit() for part in key.split(".")):
        raise RecipeError(key, f"override '{item}': keys are dotted names like stages.questions.sample")
    try:
        return key, _load_yaml(value) if value.strip() else None
    except yaml.YAMLError:
        return key, value
    except _Refused as exc:
        raise RecipeError(key, f"override '{item[:80]}': {exc}") from None


# YAML aliases share one node many times over; expanded (OmegaConf copies every one) 355 bytes of nested aliases
# became a gigabyte. Real recipes have a few hundred values, a few levels deep.
MAX_NODES = 20_000
MAX_DEPTH = 40
MAX_INT_DIGITS = 30  # past Python's int-str limit (4,300 digits) an int is a ValueError, past ~19 no seed or count


class _Refused(Exception):
    """YAML that parses but that a recipe refuses: raised with the node's position."""

    def __init__(self, mark: Any, message: str):
        super().__init__(message)
        self.mark = mark


class _RecipeLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a key given twice in one mapping is an error (PyYAML keeps the last one
    silently) and integers are bounded."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise _Refused(key_node.start_mark, f"duplicate key '{key}' (first given on line {seen[key]})")
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: Any) -> int:
        digits = sum(c.isdigit() for c in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise _Refused(node.start_mark, f"integer of {digits} digits is out of range")
        return super().construct_yaml_int(node)


_RecipeLoader.add_constructor("tag:yaml.org,2002:int", _RecipeLoader.construct_yaml_int)


def _load_yaml(text: str) -> Any:
    """Parse one YAML document, refusing what would expand past `MAX_NODES` or nest past `MAX_DEPTH` (aliases
    included, so an alias bomb or an alias inside itself is a one-line error before anything is copied)."""
    loader = _RecipeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise _Refused(loader.get_mark(), f"nested deeper than {MAX_DEPTH} levels") from None
        if node is None:
            return None
        _count_nodes(node, 0, set(), {})
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _count_nodes(node: Any, depth: int, above: set[int], sizes: dict[int, int]) -> int:
    """Values under `node` with every alias expanded; each shared node is counted once per use, walked once."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in above:
        raise _Refused(node.start_mark, "an alias refers to a value that contains it")
    if depth > MAX_DEPTH:
        raise _Refused(node.start_mark, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    above.add(id(node))
    total = 1
    for child in children:
        total += _count_nodes(child, depth + 1, above, sizes)
        if total > MAX_NODES:
            raise _Refused(node.start_mark, f"more than {MAX_NODES} values once aliases are expanded")
    above.discard(id(node))
    sizes[id(node)] = total
    return total


def _check_no_resolvers(value: Any, path: str) -> None:
    # OmegaConf resolvers such as ${oc.env:TOKEN} would copy environment secrets into configs and manifests.
    if isinstance(value, str) and _RESOLVER_RE.search(value):
        raise RecipeError(
            path,
            f"'{value}': only ${{key.path}} references are allowed (resolvers like "
            "${oc.env:...} are disabled so secrets never enter a recipe)",
        )
    if isinstance(value, dict):
        for k, v in value.items():
            _check_no_resolvers(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_no_resolvers(v, f"{path}[{i}]")


def resolve(data: dict, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Apply `key=value` overrides, then resolve `${...}` references (OmegaConf does both)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    parsed = [_parse_override(o) for o in overrides]
    _check_no_resolvers(data, "")
    for key, value in parsed:
        _check_no_resolvers(value, key)
    try:
        cfg = OmegaConf.create(data)
    except OmegaConfBaseException as exc:
        raise RecipeError(getattr(exc, "full_key", "") or "", _omega_msg(exc)) from None
    for key, value in parsed:
        try:
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)
        except OmegaConfBaseException as exc:
            raise RecipeError(key, f"cannot apply override: {_omega_msg(exc)}") from None
    try:
        out = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise RecipeError(getattr(exc, "full_key", "") or "", _omega_msg(exc)) from None
    assert isinstance(out, dict)
    return out


def _omega_msg(exc: Exception) -> str:
    msg = str(exc).splitlines()[0].strip()
    m = re.match(r"Interpolation key '([^']*)' not found", msg)
    if m:
        return f"${{{m.group(1)}}} refers to a key that does not exist"
    if "Recursion" in msg or "recursion" in msg:
        return "interpolation refers to itself (a cycle of ${...} references)"
    return msg


def validate(data: dict, base_dir: Path, path: Path | None = None) -> Recipe:
    """Validate a resolved recipe mapping into a `Recipe`."""
    top = _validated(_TopLevel, data, "", {})
    backends: dict[str, BackendConfig] = {}
    for bname, raw in top.backends.items():
        bpath = f"backends.{bname}"
        if not _NAME_RE.fullmatch(str(bname)):
            bpath = f"backends.{_shown(bname)}"
            raise RecipeError(bpath, "backend names are letters, digits, '_', '-' and '.' (at most 100)")
        if not isinstance(raw, dict):
            raise RecipeError(bpath, "expected a mapping with a 'type' (transformers, vllm, openai)")
        if "type" not in raw:
            raise RecipeError(f"{bpath}.type", "missing required key (transformers, vllm or openai)")
        try:
            model = registry.backend(str(raw["type"]))
        except registry.UnknownName as exc:
            raise RecipeError(f"{bpath}.type", str(exc)) from None
        backends[bname] = _validated(model, raw, bpath, {})

    stages: dict[str, StageEntry] = {}
    wirings: dict[str, list[str] | dict[str, Any]] = {}
    for sname, raw in top.stages.items():
        spath = f"stages.{sname}"
        if not _NAME_RE.fullmatch(str(sname)):
            spath = f"stages.{_shown(sname)}"
            raise RecipeError(spath, "stage names are letters, digits, '_', '-' and '.' (at most 100)")
        if not isinstance(raw, dict):
            raise RecipeError(spath, "expected a mapping with 'uses' (and 'inputs', options)")
        raw = dict(raw)
        uses = raw.pop("uses", None)
        if uses is None:
            raise RecipeError(f"{spath}.uses", f"missing required key (one of: {', '.join(registry.STAGES)})")
        if not isinstance(uses, str):
            raise RecipeError(f"{spath}.uses", f"expected a stage name, got {uses!r}")
        inputs = raw.pop("inputs", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        named = isinstance(inputs, dict)
        if named:
            for role, v in inputs.items():
                if not (isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v))):
                    raise RecipeError(f"{spath}.inputs.{role}", f"expected a stage name (or a list of them), got {v!r}")
            written: list[str] | dict[str, Any] = dict(inputs)
            inputs = [i for v in inputs.values() for i in (v if isinstance(v, list) else [v])]
        elif not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            raise RecipeError(
                f"{spath}.inputs",
                f"expected a list of stage names or hub:// URLs, or role: stage pairs, got {inputs!r}",
            )
        else:
            written = list(inputs)
        try:
            spec = registry.stage(uses)
        except registry.UnknownName as exc:
            raise RecipeError(f"{spath}.uses", str(exc)) from None
        context = {"base_dir": str(base_dir), "recipe": top.name, "stage": str(sname)}  # for defaults named after them
        options = _validated_options(spec, raw, spath, context)
        for field_path, backend_name in backend_refs(options):
            if backend_name not in backends:
                hint = did_you_mean(backend_name, backends) if backends else " (the recipe declares no backends)"
                raise RecipeError(f"{spath}.{field_path}", f"unknown backend '{backend_name}'{hint}")
        hub: dict[str, HubRef] = {}
        for i, inp in enumerate(inputs):
            if hub_inputs.is_hub(inp):
                try:
                    hub[inp] = hub_inputs.parse(inp, base_dir)
                except ValueError as exc:
                    raise RecipeError(f"{spath}.inputs[{i}]", str(exc)) from None
        stages[sname] = StageEntry(sname, uses, list(inputs), options, spec, hub, named_roles=named)
        wirings[sname] = written

    for sname, entry in stages.items():
        for i, inp in enumerate(entry.inputs):
            if inp in entry.hub:
                continue
            if inp == sname:
                raise RecipeError(f"stages.{sname}.inputs[{i}]", "a stage cannot read its own output")
            if inp not in stages:
                raise RecipeError(f"stages.{sname}.inputs[{i}]", f"unknown stage '{inp}'{did_you_mean(inp, stages)}")
        if len(set(entry.inputs)) != len(entry.inputs):
            raise RecipeError(f"stages.{sname}.inputs", "lists a stage twice")
    declared = {name: e.spec.outputs(e.options).get("data") for name, e in stages.items()}
    for sname, entry in stages.items():
        entry.roles = assign_roles(sname, entry.spec.roles(entry.options), wirings[sname], declared)

    order = _topological(stages)
    if top.publish and top.publish.stages:
        for i, s in enumerate(top.publish.stages):
            if s not in stages:
                raise RecipeError(f"publish.stages[{i}]", f"unknown stage '{s}'{did_you_mean(s, stages)}")
    for kind, known in (("stages", stages), ("backends", backends)):
        for name in getattr(top.executor, kind):
            if name not in known:
                raise RecipeError(f"executor.{kind}.{name}", f"unknown {kind[:-1]} '{name}'{did_you_mean(name, known)}")
    if top.publish:
        from factory.profiles import load_profile

        load_profile(top.publish.profile, base_dir)  # a missing or malformed profile fails here, not after a build
    return Recipe(
        name=top.name,
        version=top.version,
        seed=top.seed,
        description=top.description,
        vars=top.vars,
        backends=backends,
        stages=stages,
        publish=top.publish,
        path=path or base_dir / "recipe.yaml",
        order=order,
        executor=top.executor,
    )


def _shown(name: Any) -> str:
    """A refused name as an error shows it: quoted, on one line, cut short."""
    text = repr(str(name))
    return text if len(text) <= 40 else text[:37] + "..."


def _topological(stages: dict[str, StageEntry]) -> list[str]:
    """Build order: each stage after its inputs, otherwise in recipe order (stable, so plans read naturally)."""
    order: list[str] = []
    done: set[str] = set()
    remaining = list(stages)
    while remaining:
        ready = [s for s in remaining if all(i in done for i in stages[s].stage_inputs())]
        if not ready:
            raise RecipeError("stages", f"cycle in inputs: {' -> '.join(_find_cycle(stages, remaining))}")
        order.append(ready[0])
        done.add(ready[0])
        remaining.remove(ready[0])
    return order


def _find_cycle(stages: dict[str, StageEntry], candidates: list[str]) -> list[str]:
    start = candidates[0]
    path = [start]
    while True:
        nxt = next(i for i in stages[path[-1]].stage_inputs() if i in candidates)
        if nxt in path:
            cycle = path[path.index(nxt) :] + [nxt]
            return list(reversed(cycle))
        path.append(nxt)


def _validated_options(spec: StageSpec, raw: Any, prefix: str, context: dict) -> Any:
    """A stage's options; for a union of option models (chosen by a tag such as `rule`), errors are reported
    against the chosen model, without the tag in the field path."""
    try:
        return spec.validate_options(raw, context)
    except ValidationError as exc:
        models = option_models(spec.options)
        if len(models) == 1:
            raise _recipe_error(exc, prefix, models[0]) from None
        return _union_error(exc, prefix, models)


def _union_error(exc: ValidationError, prefix: str, models: list) -> Any:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    chosen = next((m for m in models if loc and getattr(m, "TAG", None) == loc[0]), None)
    if chosen is None:
        raise _recipe_error(exc, prefix, models[0]) from None
    stripped = [{**e, "loc": tuple(e["loc"])[1:]} for e in exc.errors()]
    raise _recipe_error_from(stripped, prefix, chosen) from None


def _validated(model: type[BaseModel], raw: Any, prefix: str, context: dict) -> Any:
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        raise _recipe_error(exc, prefix, model) from None


def _join(prefix: str, loc: tuple) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def _recipe_error(exc: ValidationError, prefix: str, model: type[BaseModel]) -> RecipeError:
    return _recipe_error_from(exc.errors(), prefix, model)


def _recipe_error_from(errors: list, prefix: str, model: type[BaseModel]) -> RecipeError:
    err = errors[0]
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        message = f"unknown key{did_you_mean(str(loc[-1]), known)}"
    elif kind == "missing":
        message = "missing required key"
    else:
        message = err["msg"].removeprefix("Value error, ")
        if kind != "value_error":
            shown = repr(err.get("input"))
            message += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
    if len(errors) > 1:
        message += f" (+{len(errors) - 1} more)"
    return RecipeError(_join(prefix, loc), message)


def _fields_at(model: Any, loc: tuple) -> list[str]:
    """Field names of the (nested) model that `loc` points into, for 'did you mean' hints."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            current = _inner_model(current)
            if isinstance(part, int):
                continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return []
        current = current.model_fields[part].annotation
    current = _inner_model(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
