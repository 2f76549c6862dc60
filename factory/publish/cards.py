"""Dataset and model cards: metadata built here, the body rendered from `cards/*.md.jinja` (sandboxed Jinja).

The card of a repo is a pure function of its stage outputs' manifests and of where their upstreams were published,
so republishing unchanged outputs gives byte-identical cards (and so a no-op). It never holds a local path, a time
of publishing or its own version: those would change the content hash without changing the data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BUILTIN = Path(__file__).resolve().parents[1] / "card_templates"
EMBEDDED = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Hub task categories per stage kind (a stage not listed is text generation)
TASKS: dict[str, list[str]] = {
    "meta_personas": ["tabular-classification"],
    "calibrate": ["tabular-classification"],
    "personas": ["text-generation"],
    "questions": ["question-answering", "multiple-choice"],
    "answers": ["multiple-choice", "question-answering"],
    "evaluate": ["multiple-choice"],
    "preferences": ["text-generation"],
    "train_dpo": ["text-generation"],
    "trait_control": ["text-generation", "text-classification"],
    "review": ["text-generation"],
}
TAGS: dict[str, list[str]] = {
    "meta_personas": ["census", "acs", "demographics"],
    "calibrate": ["census", "raking"],
    "personas": ["personas"],
    "questions": ["survey"],
    "answers": ["survey", "simulation"],
    "evaluate": ["survey", "evaluation"],
    "preferences": ["dpo", "preference"],
    "train_dpo": ["dpo"],
    "trait_control": ["personality", "evaluation"],
    "review": ["dpo", "preference", "human-feedback"],
}
# where the data a stage reads ships from, and on what terms (factory/data/README.md has the full list)
SOURCES: dict[str, str] = {
    "meta_personas": "US Census Bureau American Community Survey tables (public domain); Big Five traits from the "
    "personality-populations study's model fitted on IPIP-NEO respondents",
    "questions": "question sets of the persona-catch and personality-populations studies; OpinionQA questions "
    "come from Pew Research Center surveys (Pew terms of use apply)",
    "evaluate": "MIT Election Data + Science Lab presidential returns (CC0); Pew answer distributions via OpinionQA "
    "(Pew terms of use apply)",
}
# licence terms of models often used to write the text; anything else points at the model's own card
MODEL_LICENCES: dict[str, str] = {
    "HuggingFaceTB/SmolLM2": "Apache-2.0",
    "meta-llama/Meta-Llama-3-": "Meta Llama 3 Community License",
    "meta-llama/Llama-3.1": "Llama 3.1 Community License",
    "meta-llama/Llama-3.2": "Llama 3.2 Community License",
    "meta-llama/Llama-3.3": "Llama 3.3 Community License",
    "mistralai/Mistral-7B": "Apache-2.0",
    "Qwen/Qwen2.5-": "Apache-2.0 for most sizes (check the model card)",
    "google/gemma": "Gemma Terms of Use",
}
SECTION_TITLES = {
    "meta_personas": "Fidelity summary",
    "calibrate": "Calibration",
    "personas": "Drift",
    "answers": "Answer validity",
    "evaluate": "Evaluation",
    "preferences": "Preference pairs",
    "train_dpo": "Training",
    "trait_control": "Trait control",
    "review": "Human review",
}
TABLE_TITLES = {
    "per_table": "Fidelity per census table (worst and mean TVD over geographies)",
    "styles": "Drift by persona style",
    "election_summary": "Elections: simulated vs real results",
    "opinionqa": "OpinionQA: alignment with Pew answer distributions",
    "figures": "Figures per style beside the baselines (value [bootstrap interval])",
    "versus_baselines": "How much each style beats each baseline and `base` (positive: better; *: interval excludes 0)",
    "targets": "Trait control per target",
    "by_style": "Answers by style and mode",
    "pairs_by_target": "Pairs by target and split",
    "reviewers": "Responses per reviewer",
}
MAX_ROWS, MAX_COLUMNS = 60, 14
_PARAGRAPHS = ("Extra", "Plots", "Example", "Artifacts", "Failures", "Summary", "Output", "Inputs", "Input")


@dataclass
class ConfigCard:
    """What the dataset card says about one config (a stage's main output or one of its extra datasets)."""

    name: str
    stage: str
    uses: str
    main: bool
    rows: int
    description: str
    schema: list[tuple[str, str]]
    failures: int = 0
    head: bool = False  # carries the stage's failures, lineage, tables and plots (its first published config)
    plots: list[str] = field(default_factory=list)
    section: str = ""  # markdown the stage wrote for its card (meta_personas' fidelity section)
    section_title: str = ""
    tables: list[dict] = field(default_factory=list)
    lineage: list[str] = field(default_factory=list)


def size_category(n: int) -> str:
    if n < 1000:
        return "n<1K"
    bounds = ["K", "K", "K", "M", "M", "M", "B", "B", "B", "T"]
    values = [1, 10, 100, 1, 10, 100, 1, 10, 100, 1]
    exp = int(math.log10(n))
    if exp >= 12:
        return "n>1T"
    lo, hi = exp - 3, exp - 2
    return f"{values[lo]}{bounds[lo]}<n<{values[hi]}{bounds[hi]}"


def known_licence(model: str) -> str:
    return next((licence for prefix, licence in MODEL_LICENCES.items() if model.startswith(prefix)), "")


def licence_of(model: str) -> str:
    return known_licence(model) or f"see the model's card (https://huggingface.co/{model.split(' ')[0]})"


def feature_type(f: Any) -> str:
    """A short type for a `Features.to_dict()` entry: int16, class label (3: a, b, c), list[string], {a: int64}."""
    if isinstance(f, list):
        return f"list[{feature_type(f[0])}]" if f else "list"
    if not isinstance(f, dict):
        return str(f)
    kind = f.get("_type")
    if kind == "Value":
        return str(f.get("dtype"))
    if kind == "ClassLabel":
        names = f.get("names") or []
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        return f"class label ({len(names)}: {shown})"
    if kind in ("List", "Sequence", "LargeList"):
        return f"list[{feature_type(f.get('feature'))}]"
    if kind is None:
        return "{" + ", ".join(f"{k}: {feature_type(v)}" for k, v in f.items()) + "}"
    return str(kind)


def schema(features: dict, columns: list[str] | None = None) -> list[tuple[str, str]]:
    """(column, type) in the dataset's column order (manifests store features with sorted keys)."""
    order = [c for c in columns or [] if c in features] + [c for c in features if c not in (columns or [])]
    return [(name, feature_type(features[name])) for name in order]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        shown = ", ".join(_fmt(x) for x in v[:12])
        return shown + (f", ... ({len(v) - 12} more)" if len(v) > 12 else "")
    return str(v).replace("|", "\\|").replace("\n", " ")


def _scalarish(v: Any) -> bool:
    """A value that fits one table cell: a scalar or a flat list."""
    if isinstance(v, dict):
        return False
    return not isinstance(v, (list, tuple)) or all(not isinstance(x, (dict, list, tuple)) for x in v)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        elif _scalarish(v):
            out[key] = v
        else:
            out[key] = json.dumps(v, ensure_ascii=False)[:80]
    return out


def _table(title: str, records: list[dict], first: str | None = None) -> dict:
    columns: list[str] = []
    for r in records:
        columns += [c for c in r if c not in columns]
    note = []
    if len(columns) > MAX_COLUMNS:
        note.append(f"first {MAX_COLUMNS} of {len(columns)} columns")
        columns = columns[:MAX_COLUMNS]
    if len(records) > MAX_ROWS:
        note.append(f"first {MAX_ROWS} of {len(records)} rows; all in the manifest")
        records = records[:MAX_ROWS]
    header = [first if (first and c == "") else c for c in columns]
    rows = [[_fmt(r.get(c)) for c in columns] for r in records]
    return {"title": title, "columns": header, "rows": rows, "note": "; ".join(note)}


def summary_tables(summary: dict, skip: tuple[str, ...] = ()) -> list[dict]:
    """Tables from a manifest summary: its scalars in one table, then one per list of records or mapping.

    Records that carry a `weighting` are shown for the summary's headline weighting only (evaluate's); a mapping
    of records whose members are mappings of records again (per target, per model) becomes one table per member,
    one row per (outer, inner) key, rather than one unreadably wide table."""
    skip = (*skip, "plots", "card_section")
    headline = summary.get("weighting") if isinstance(summary.get("weighting"), str) else None
    tables = []
    scalars = [{"measure": k, "value": v} for k, v in summary.items() if k not in skip and _scalarish(v)]
    if scalars:
        tables.append(_table("Summary", scalars))
    for key, value in summary.items():
        if key in skip or _scalarish(value):
            continue
        title = TABLE_TITLES.get(key, key.replace("_", " "))
        if isinstance(value, list):
            records = [_flatten(x) if isinstance(x, dict) else {"value": x} for x in value]
            if headline and any("weighting" in r for r in records):
                records = [r for r in records if r.get("weighting") in (headline, None)]
                title += f" ({headline} weighting)"
            tables.append(_table(title, records))
        elif all(isinstance(x, dict) for x in value.values()):
            tables += _nested(title, value, _singular(key))
        else:
            tables.append(_table(title, [{"measure": k, "value": v} for k, v in _flatten(value).items()]))
    return tables


def _singular(key: str) -> str:
    return key[:-1] if key.endswith("s") and len(key) > 1 else key


def _is_records(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and all(isinstance(x, dict) for x in v.values())


def _nested(title: str, value: dict[str, dict], label: str) -> list[dict]:
    split = [k for k in dict.fromkeys(k for rec in value.values() for k in rec) if all(
        _is_records(rec.get(k)) for rec in value.values() if k in rec)]  # fmt: skip
    rows = [{"": outer, **_flatten({k: v for k, v in rec.items() if k not in split})} for outer, rec in value.items()]
    tables = [_table(title, rows, first=label)] if any(len(r) > 1 for r in rows) or not split else []
    for member in split:
        inner_label = _singular(member)
        records = []
        for outer, rec in value.items():
            for inner, fields in (rec.get(member) or {}).items():
                flat = {
                    (f"{inner_label}.{k}" if k in (label, inner_label) else k): v for k, v in _flatten(fields).items()
                }
                records.append({"": outer, inner_label: inner, **flat})
        tables.append(_table(f"{title}: {member.replace('_', ' ')}", records, first=label))
    return tables


def models_of(manifest: dict) -> list[str]:
    """Model ids a stage used: its backends' models (the embedded default when none is named) and any `model`
    option (a train_dpo base, a judge)."""
    found: list[str] = []
    for b in (manifest.get("fingerprint_payload") or {}).get("backends", {}).values():
        model = b.get("model") or (f"{EMBEDDED} (embedded)" if b.get("type") == "transformers" else None)
        if model and model not in found:
            found.append(str(model))

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "model" and isinstance(v, str) and v not in found:
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(manifest.get("config") or {})
    if manifest.get("uses") == "train_dpo" and not (manifest.get("config") or {}).get("model"):
        found.append(f"{EMBEDDED} (embedded)")
    return found


def stage_doc(uses: str) -> str:
    """The stage module's docstring ('' when it cannot be imported here)."""
    from factory import registry
    from factory.hooks import import_object

    try:
        obj = import_object(registry.STAGES[uses]) if uses in registry.STAGES else import_object(uses)
    except Exception:  # a hook from a package not installed here: the card still renders, without a paragraph
        return ""
    return (getattr(obj, "__doc__", None) or "").strip()


def describe(uses: str, extra: str | None) -> str:
    """One paragraph: the docstring's summary for a stage's data, its `Extra `name`` paragraph for an extra."""
    doc = stage_doc(uses)
    if not doc:
        return f"Output of the `{uses}` stage." if extra is None else f"Extra output `{extra}` of `{uses}`."
    lines = doc.splitlines()
    if extra is None:
        para = []
        for line in lines:
            if not line.strip():
                break
            para.append(line.strip())
        return " ".join(para)
    for i, line in enumerate(lines):
        if line.lstrip().startswith("Extra") and f"`{extra}`" in line:
            para = [line.strip()]
            for nxt in lines[i + 1 :]:
                if not nxt.strip() or nxt.lstrip().startswith(_PARAGRAPHS):
                    break
                para.append(nxt.strip())
            return " ".join(para)
    return f"Extra output `{extra}` of the `{uses}` stage."


def input_label(info: dict) -> str:
    """A hub input as a card shows it: a folder repo by its name only (no local path leaves the machine)."""
    if info.get("commit"):  # a folder repo
        config = f":{info['config']}" if info.get("config") else ""
        return f"hub+file://.../{Path(info['repo']).name}@{info['revision']}{config}"
    return str(info.get("hub") or info.get("repo"))


def recipe_yaml(name: str, version: Any, seed: Any, stages: dict[str, dict]) -> str:
    """The part of the recipe that built the published stages, from their manifests (what actually ran)."""
    body: dict[str, Any] = {"name": name, "version": version, "seed": seed, "stages": {}}
    for stage, m in stages.items():
        entry: dict[str, Any] = {"uses": m["uses"]}
        inputs = [input_label(v) if "hub" in v else k for k, v in (m.get("inputs") or {}).items()]
        if inputs:
            entry["inputs"] = inputs
        entry.update({k: v for k, v in (m.get("config") or {}).items() if v is not None and k != "batch_size"})
        body["stages"][stage] = entry
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=110).strip()


def render_dataset_card(card_data: dict[str, Any], template: Path | None = None, **variables: Any) -> str:
    """README.md of a dataset repo; raises if the metadata does not round-trip through `DatasetCard`."""
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(**card_data)
    return _render(DatasetCard, data, template or BUILTIN / "dataset.md.jinja", variables)


def render_model_card(card_data: dict[str, Any], template: Path | None = None, **variables: Any) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(**card_data)
    return _render(ModelCard, data, template or BUILTIN / "adapter.md.jinja", variables)


def _render(card_cls: Any, data: Any, template: Path, variables: dict[str, Any]) -> str:
    from factory.prompts import render

    text = render(template, card_data=data.to_yaml(), **variables) + "\n"
    card = card_cls(text)  # parses the YAML header back: a malformed card fails here, not on the Hub
    if card.data.to_dict() != data.to_dict():
        raise ValueError(f"{template.name}: the card's metadata does not round-trip")
    return text
