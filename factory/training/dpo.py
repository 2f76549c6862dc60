"""DPO training for the `train_dpo` stage: TRL's DPOTrainer with a PEFT LoRA adapter, a persistent reference
log-prob cache, exact resume from checkpoints, and the training log as rows.

How the reference log-probs are cached. With `precompute_ref_log_probs=True`, `DPOTrainer.__init__` tokenizes the
train and eval datasets, then calls `_precompute_ref_logps(dataset, name, batch_size)` on each; that runs the
model with the adapter disabled over every pair and returns the tokenized dataset with two more columns,
`ref_chosen_logps` and `ref_rejected_logps`, which the collator forwards and `_compute_loss` reads instead of
running a reference forward each step. `CachedRefDPOTrainer` overrides that one method: on a hit it concatenates
the cached columns (as TRL itself does with its own cache file), on a miss it calls TRL's method and saves the
columns. TRL's own cache cannot serve here: it lives beside the dataset's arrow files (for pairs loaded from a
stage output, inside that stage's fingerprinted folder) and is keyed by a hash of every model parameter, which
TRL computes in `__init__` (`hash_module`, a full pass over the weights); that hash only names TRL's cache file,
which is a random temporary file for the in-memory datasets built here, so it is replaced by our key.

Cache key (sha256 of canonical JSON): the pair dataset's fingerprint and content hash, which split, the base model
id, revision and identity (sha256 of a local folder's weight, config and tokenizer files, memoized by size and
mtime; the resolved commit for a Hub id), precision, quantization, device, `max_length`, `truncation_mode`,
`ld_alpha`, `pad_to_multiple_of`, the precompute batch size (padding changes float rounding), trl and torch
versions. A cached entry also records a digest of the tokenized ids and is ignored when they differ.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from factory.errors import DataError, StageError
from factory.fingerprint import canonical_json, sha256_file

log = logging.getLogger(__name__)

PAIR_COLUMNS = ["prompt", "chosen", "rejected"]
REF_COLUMNS = ["ref_chosen_logps", "ref_rejected_logps"]
LOG_COLUMNS = [
    "loss",
    "grad_norm",
    "learning_rate",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
    "entropy",
    "mean_token_accuracy",
    "num_tokens",
]
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".model", ".txt", ".jinja", ".tiktoken")
CACHE_FORMAT = 1


# --- inputs ------------------------------------------------------------------------------------------------------
def pair_splits(pairs: Any, eval_split: str | None, where: str) -> tuple[Any, Any | None]:
    """(train pairs, eval pairs or None) as in-memory datasets holding only prompt/chosen/rejected.

    In memory on purpose: `datasets` writes map/filter caches beside a dataset's arrow files, which for a stage
    output would be inside another stage's fingerprinted folder."""
    from datasets import Dataset

    missing = [c for c in PAIR_COLUMNS if c not in pairs.column_names]
    if missing:
        raise DataError(
            f"{where}.inputs: the pairs lack column(s) {', '.join(missing)}; train_dpo reads TRL preference pairs "
            "(prompt, chosen, rejected)"
        )
    has_split = "split" in pairs.column_names
    rows = pairs.select_columns(PAIR_COLUMNS + (["split"] if has_split else [])).to_list()
    train = [{c: r[c] for c in PAIR_COLUMNS} for r in rows if not has_split or r["split"] == "train"]
    test = [{c: r[c] for c in PAIR_COLUMNS} for r in rows if has_split and eval_split and r["split"] == eval_split]
    if not train:
        raise DataError(f"{where}.inputs: no pair has split 'train' ({len(rows)} pairs in all)")
    return Dataset.from_list(train), Dataset.from_list(test) if test else None


# --- model -------------------------------------------------------------------------------------------------------
def device_and_precision(options: Any, where: str) -> tuple[str, str]:
    import torch

    gpu = torch.cuda.is_available()
    if options.load_in and not gpu:
        raise StageError(
            f"{where}.load_in: {options.load_in} quantization (bitsandbytes) needs a CUDA GPU and this machine has "
            "none; remove load_in to train on CPU"
        )
    precision = options.precision
    if precision == "auto":
        precision = "bfloat16" if gpu and torch.cuda.is_bf16_supported() else "float32"
    return ("cuda" if gpu else "cpu"), precision


def load_base(options: Any, device: str, precision: str, where: str) -> tuple[Any, Any, str, str]:
    """(model, tokenizer, path or Hub id loaded, model id to record)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from factory.llm.models import resolve

    hf_logging.disable_progress_bar()
    path, model_id = resolve(options.model)
    dtype = getattr(torch, precision)
    kwargs: dict[str, Any] = {"revision": options.revision, "dtype": dtype}
    if options.load_in:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise StageError(f"{where}.load_in: needs bitsandbytes (pip install bitsandbytes)")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype,
            )
            if options.load_in == "4bit"
            else BitsAndBytesConfig(load_in_8bit=True)
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=options.revision)
    if options.load_in:
        from peft import prepare_model_for_kbit_training

        # norms to float32 and input gradients on, as QLoRA needs (the study imported this and never called it)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=options.gradient_checkpointing)
    return model, tokenizer, path, model_id


def model_identity(path: str, revision: str | None, memo: Path | None) -> str:
    """What the base weights are: sha256 over a local folder's files, or a Hub id at its resolved commit."""
    folder = Path(path)
    if folder.is_dir():
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in MODEL_FILE_SUFFIXES)
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.name}\0{sha256_memo(f, memo)}\n".encode())
        return f"sha256:{h.hexdigest()}"
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(path, "config.json", revision=revision)
    commit = Path(found).parent.name if isinstance(found, str) else revision  # .../snapshots/<commit>/config.json
    return f"hub:{path}@{commit}"


def sha256_memo(path: Path, memo: Path | None) -> str:
    """A file's sha256, remembered across processes in `memo` (a JSON file) while its size and mtime hold."""
    if memo is None:
        return sha256_file(path)
    stat = path.stat()
    known = json.loads(memo.read_text()) if memo.is_file() else {}
    key = str(path.resolve())
    entry = known.get(key)
    if entry and entry[:2] == [stat.st_size, stat.st_mtime_ns]:
        return entry[2]
    digest = sha256_file(path)
    known[key] = [stat.st_size, stat.st_mtime_ns, digest]
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    os.replace(tmp, memo)
    return digest


# --- reference log-prob cache ------------------------------------------------------------------------------------
class RefLogpCache:
    """Reference log-probs of one pair dataset under one base model, per split, in `root/<key>/`."""

    def __init__(self, root: Path, payload: dict[str, Any], splits: dict[str, str | None]):
        self.root = root
        self.payload = payload
        self.splits = splits  # TRL's dataset name ("train", "eval") -> `split` value of the pairs

    def key(self, name: str) -> str:
        split = self.splits.get(name, name)
        return hashlib.sha256(canonical_json({**self.payload, "split": split})).hexdigest()[:32]

    def load(self, name: str, dataset: Any) -> Any | None:
        from datasets import load_from_disk

        folder = self.root / self.key(name)
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        if meta.get("rows") != len(dataset) or meta.get("tokens") != token_digest(dataset):
            log.warning("reference log-prob cache %s does not match the tokenized pairs; recomputing", folder)
            return None
        return load_from_disk(str(folder / "logps"))

    def save(self, name: str, dataset: Any) -> None:
        folder = self.root / self.key(name)
        tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        dataset.select_columns(REF_COLUMNS).flatten_indices().save_to_disk(str(tmp / "logps"))
        meta = {"payload": self.payload, "split": self.splits.get(name, name), "rows": len(dataset)}
        meta["tokens"] = token_digest(dataset)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        try:
            os.replace(tmp, folder)
        except OSError:  # another build saved the same entry first
            shutil.rmtree(tmp, ignore_errors=True)


def token_digest(dataset: Any) -> str:
    h = hashlib.sha256()
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        h.update(canonical_json(list(dataset[column])))
    return h.hexdigest()


def input_identity(pairs: Any, fingerprint: str | None = None, content_hash: str | None = None) -> dict[str, Any]:
    """What the pairs are, for the cache key: the upstream stage's fingerprint and content hash (the content hash
    guards against an upstream rebuilt to different rows under the same fingerprint); for pairs that come from no
    stage, the in-memory dataset's own fingerprint."""
    if not fingerprint:
        return {"dataset_fingerprint": getattr(pairs, "_fingerprint", None)}
    return {"fingerprint": fingerprint, "content_hash": content_hash}


@contextmanager
def _model_hash(value: str):
    """Stand in for TRL's full-weight hash (see the module docstring) while the trainer is built."""
    import trl.trainer.dpo_trainer as dpo_trainer

    original = dpo_trainer.hash_module
    dpo_trainer.hash_module = lambda module: value
    try:
        yield
    finally:
        dpo_trainer.hash_module = original


@cache
def trainer_class() -> type:
    from datasets import concatenate_datasets
    from trl import DPOTrainer

    class CachedRefDPOTrainer(DPOTrainer):
        """DPOTrainer whose reference log-prob pass is served from, or saved to, a `RefLogpCache`."""

        def __init__(self, *args: Any, ref_cache: RefLogpCache | None = None, **kwargs: Any):
            self.ref_cache = ref_cache
            self.ref_stats = {"hits": 0, "misses": 0, "seconds": 0.0}
            if ref_cache is None:
                super().__init__(*args, **kwargs)
                return
            with _model_hash(ref_cache.key("model")):
                super().__init__(*args, **kwargs)

        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            start = time.perf_counter()
            cached = self.ref_cache.load(name, dataset) if self.ref_cache else None
            if cached is not None:
                out = concatenate_datasets([dataset, cached], axis=1)
                self.ref_stats["hits"] += 1
            else:
                out = super()._precompute_ref_logps(dataset, name, batch_size)
                if self.ref_cache:
                    self.ref_cache.save(name, out)
                self.ref_stats["misses"] += 1
            self.ref_stats["seconds"] += time.perf_counter() - start
            return out

    return CachedRefDPOTrainer


# --- checkpoints, BOS, log -----------------------------------------------------------------------------------------
def last_checkpoint(folder: Path) -> Path | None:
    """The latest `checkpoint-N` that was saved completely (its trainer_state.json is written last)."""
    complete = []
    for path in folder.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        try:
            if step.isdigit():
                json.loads((path / "trainer_state.json").read_text())
                complete.append((int(step), path))
        except (OSError, ValueError):
            continue
    return max(complete)[1] if complete else None


def tokens_logged(checkpoint: Path) -> int:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    seen = [e["num_tokens"] for e in state.get("log_history", []) if "num_tokens" in e and "loss" in e]
    return int(seen[-1]) if seen else 0


def leading_bos(ids: list[int], bos_id: int | None) -> int:
    n = 0
    while bos_id is not None and n < len(ids) and ids[n] == bos_id:
        n += 1
    return n


def check_bos(dataset: Any, tokenizer: Any, where: str) -> int:
    """BOS tokens at the start of the first tokenized pair; more than one is the study's bug, an error here."""
    row = dataset[0]
    n = leading_bos(list(row["prompt_ids"]) + list(row["chosen_ids"]), tokenizer.bos_token_id)
    if n > 1:
        raise StageError(
            f"{where}: the tokenized pairs start with {n} BOS tokens; the chat template and the tokenizer both add "
            "one (fix the template or the tokenizer's add_bos_token)"
        )
    return n


def log_rows(history: list[dict[str, Any]]) -> tuple[list[dict], Any]:
    """Trainer log history -> (rows, Features): one row per logged train step or evaluation, timings left out."""
    from datasets import Features, Value

    rows = []
    for entry in history:
        if "train_runtime" in entry:  # the end-of-training summary, not a step
            continue
        is_eval = any(k.startswith("eval_") for k in entry)
        row: dict[str, Any] = {"split": "eval" if is_eval else "train"}
        for k, v in entry.items():
            if k in ("step", "epoch", "total_flos") or k.endswith(("_runtime", "_per_second")):
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[k.removeprefix("eval_") if is_eval else k] = float(v)
        row["step"], row["epoch"] = int(entry.get("step", 0)), float(entry.get("epoch", 0.0))
        rows.append(row)
    columns = LOG_COLUMNS + sorted({k for r in rows for k in r} - set(LOG_COLUMNS) - {"split", "step", "epoch"})
    features = Features(
        {"split": Value("string"), "step": Value("int32"), "epoch": Value("float32")}
        | {c: Value("float64") for c in columns}
    )
    return [{c: r.get(c) for c in features} for r in rows], features


# --- the stage ---------------------------------------------------------------------------------------------------
def dpo_config(options: Any, output_dir: Path, seed: int, device: str, precision: str, where: str) -> Any:
    from trl import DPOConfig

    from factory.training.config import DPO_DEFAULTS

    try:
        return DPOConfig(
            **{**DPO_DEFAULTS, **options.dpo},
            output_dir=str(output_dir),
            seed=seed,
            data_seed=seed,
            report_to="none",
            precompute_ref_log_probs=True,
            save_strategy="steps",
            save_steps=options.save_steps,
            save_total_limit=2,  # the newest may be half-written when a crash hits during a save
            bf16=precision == "bfloat16",
            fp16=False,
            use_cpu=device == "cpu",
            gradient_checkpointing=options.gradient_checkpointing,
            remove_unused_columns=True,
        )
    except (TypeError, ValueError) as exc:
        raise StageError(f"{where}.dpo: {str(exc).strip().splitlines()[0]}") from None


def lora_config(options: Any) -> Any:
    from peft import LoraConfig

    lora = options.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
        revision=options.revision,
    )


def build_trainer(
    options: Any,
    pairs: Any,
    args: Any,
    device: str,
    precision: str,
    where: str,
    cache_dir: Path | None = None,
    pairs_identity: dict[str, Any] | None = None,
) -> Any:
    """The DPO trainer on these pairs (reference log-probs precomputed, or loaded from `cache_dir/ref_logps` when a
    cache folder is given; `pairs_identity` (`input_identity`) names the pairs in its key)."""
    import torch
    import trl
    from transformers.trainer_callback import PrinterCallback

    train_ds, eval_ds = pair_splits(pairs, options.eval_split, where)
    model, tokenizer, path, model_id = load_base(options, device, precision, where)
    root = Path(cache_dir) if cache_dir is not None else None
    ref_cache = None
    if root is not None:
        payload = {
            "format": CACHE_FORMAT,
            "pairs": pairs_identity or input_identity(pairs),
            "model": model_id,
            "revision": options.revision,
            "weights": model_identity(path, options.revision, root / "sha256.json"),
            "precision": precision,
            "load_in": options.load_in,
            "device": device,
            "max_length": args.max_length,
            "truncation_mode": args.truncation_mode,
            "ld_alpha": args.ld_alpha,
            "pad_to_multiple_of": args.pad_to_multiple_of,
            "batch_size": {
                "train": args.precompute_ref_batch_size or args.per_device_train_batch_size,
                "eval": args.precompute_ref_batch_size or args.per_device_eval_batch_size,
            },
            "versions": {"trl": trl.__version__, "torch": torch.__version__},
        }
        ref_cache = RefLogpCache(root / "ref_logps", payload, {"train": "train", "eval": options.eval_split})
    with _quiet(args.disable_tqdm):
        trainer = trainer_class()(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            peft_config=lora_config(options),
            ref_cache=ref_cache,
        )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the log is the stage's output instead
    trainer.factory_model_id = model_id
    return trainer


@contextmanager
def _quiet(quiet: bool):
    """TRL's reference pass draws a tqdm bar unless TQDM_DISABLE is set; set it while the trainer is built."""
    before = os.environ.get("TQDM_DISABLE")
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def train(
    options: Any,
    pairs: Any,
    *,
    stage: str,
    seed: int,
    workdir: Path | None = None,
    cache_dir: Path | None = None,
    pairs_identity: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, float]]:
    """Train on `pairs`; returns (the training log as a Dataset, metrics). `workdir` holds checkpoints and the
    adapter (`workdir/adapter`); `cache_dir` the reference log-probs shared across builds (none: no cache)."""
    from datasets import Dataset

    where = f"stages.{stage}"
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="train_dpo-"))
    checkpoints, adapter = workdir / "checkpoints", workdir / "adapter"
    for stale in (adapter, adapter.with_name("adapter.tmp")):
        shutil.rmtree(stale, ignore_errors=True)
    device, precision = device_and_precision(options, where)
    seed = seed % 2**31  # numpy seeds must fit 32 bits
    args = dpo_config(options, checkpoints, seed, device, precision, where)  # bad dpo values fail before loading
    trainer = build_trainer(options, pairs, args, device, precision, where, cache_dir, pairs_identity)
    bos = check_bos(trainer.train_dataset, trainer.processing_class, where)

    resume = last_checkpoint(checkpoints) if checkpoints.is_dir() else None
    tokens_before = 0
    if resume is not None:
        log.info("%s: resuming from %s", stage, resume.name)
        # TRL's running token count restarts at 0 in a new process; continue it so num_tokens stays cumulative
        tokens_before = trainer._total_train_tokens = tokens_logged(resume)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = time.perf_counter() - started
    state = trainer.state
    if trainer.eval_dataset is not None and not any(
        "eval_loss" in e and e.get("step") == state.global_step for e in state.log_history
    ):
        trainer.evaluate()
    rows, features = log_rows(state.log_history)

    train_rows = [r for r in rows if r["split"] == "train"]
    eval_rows = [r for r in rows if r["split"] == "eval"]
    tokens = int((train_rows[-1]["num_tokens"] or 0) - tokens_before) if train_rows else 0
    stats = trainer.ref_stats
    metrics = {
        "steps": float(state.global_step),
        "train_seconds": train_seconds,
        "train_tokens": float(tokens),
        "tokens_per_second": tokens / train_seconds if train_seconds else 0.0,
        "ref_logps_cached": float(stats["misses"] == 0),
        "ref_logps_seconds": stats["seconds"],
        "resumed_from_step": float(int(resume.name.split("-")[-1]) if resume else 0),
        "bos_tokens_at_start": float(bos),
    }
    summary = {
        "model": trainer.factory_model_id,
        "revision": options.revision,
        "device": device,
        "precision": precision,
        "load_in": options.load_in,
        "steps": state.global_step,
        "epochs": state.epoch,
        "final_train_loss": train_rows[-1]["loss"] if train_rows else None,
        "mean_train_loss": result.training_loss,
        "eval": {k: v for k, v in eval_rows[-1].items() if v is not None and k != "split"} if eval_rows else None,
        "train_pairs": len(trainer.train_dataset),
        "eval_pairs": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "seconds": round(train_seconds, 3),
        "tokens": tokens,
        "tokens_per_second": round(metrics["tokens_per_second"], 1),
        "ref_logps_cached": bool(metrics["ref_logps_cached"]),
        "ref_logps_seconds": round(stats["seconds"], 3),
        "resumed_from_step": int(metrics["resumed_from_step"]) or None,
    }
    save_adapter(trainer, adapter, {"summary": summary, "metrics": metrics})
    shutil.rmtree(checkpoints, ignore_errors=True)  # they only served crash recovery
    return Dataset.from_list(rows, features=features), metrics


def save_adapter(trainer: Any, adapter: Path, metrics: dict[str, Any]) -> None:
    """Adapter weights and config, tokenizer, training_args.json and metrics.json; renamed into place last."""
    tmp = adapter.with_name("adapter.tmp")
    trainer.save_model(str(tmp))
    # peft writes set-valued fields (target_modules...) as list(set): an order that changes with PYTHONHASHSEED
    config = json.loads((tmp / "adapter_config.json").read_text())
    peft_config = trainer.model.peft_config["default"]
    for key in config:
        if isinstance(getattr(peft_config, key, None), set):
            config[key] = sorted(config[key])
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    for name in ("training_args.bin", "README.md"):  # a pickle, and TRL's card naming the scratch folder
        (tmp / name).unlink(missing_ok=True)
    (tmp / "training_args.json").write_text(trainer.args.to_json_string())
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, adapter)
