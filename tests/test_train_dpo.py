"""train_dpo on the tiny model: LoRA weights move and the adapter loads with PEFT, TRL takes the pair dataset as it
is, prompts carry one BOS, a second build with another beta reuses the cached reference log-probs, `dpo:` mistakes
are one-line recipe errors at validate time, the DPOConfig field table matches trl, and a crash resumes from the
last checkpoint to the very same adapter bytes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from datasets import Dataset, load_from_disk

from factory.errors import RecipeError, StageError
from factory.recipe import load_recipe
from factory.runner import Runner
from factory.stages import train_dpo
from factory.training.config import DPO_DEFAULTS, FIELDS_FILE

ROOT = Path(__file__).resolve().parents[1]

RECIPE = """\
name: dpo
seed: 0
stages:
  pairs: {{uses: "fake_pairs:stage", n: 16, n_test: 4}}
  adapter:
    uses: train_dpo
    inputs: [pairs]
    model: "{model}"
    gradient_checkpointing: false
    save_steps: 1
    {dpo}
"""
DPO = "dpo: {beta: 0.1, max_steps: 3, per_device_train_batch_size: 2, learning_rate: 1.0e-2}"


def recipe_text(model, dpo: str = DPO) -> str:
    return RECIPE.format(model=model, dpo=dpo)


def build(recipe: Path, runs: Path, overrides=()):
    runner = Runner(load_recipe(recipe, list(overrides)), runs_dir=runs, progress=False)
    runner.build()
    return runner.store("adapter")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def first(tmp_path_factory, tiny_path):
    """One training run (3 steps), shared by the tests that read it."""
    tmp = tmp_path_factory.mktemp("dpo")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(recipe_text(tiny_path))
    store = build(recipe, tmp / "runs")
    return SimpleNamespace(recipe=recipe, runs=tmp / "runs", store=store, adapter=store.dir / "artifacts" / "adapter")


def test_training_moves_the_lora_weights_and_the_adapter_loads(first, tiny_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    adapter = first.adapter
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "training_args.json"):
        assert (adapter / name).is_file(), name
    assert not (adapter / "training_args.bin").exists()  # no pickle in a publishable folder
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["target_modules"] == ["q_proj", "v_proj"] and config["r"] == 8  # sorted: same bytes every run
    weights = load_file(adapter / "adapter_model.safetensors")
    b = [t for k, t in weights.items() if "lora_B" in k]
    assert len(b) == 2 * 2  # q_proj and v_proj in both layers
    assert all(t.abs().sum() > 0 for t in b)  # LoRA B starts at zero: any non-zero entry is training

    base = AutoModelForCausalLM.from_pretrained(tiny_path)
    ids = torch.tensor([[1, 5, 9, 12, 20]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, adapter)
        after = tuned(ids).logits
    assert not torch.allclose(before, after)

    args = json.loads((adapter / "training_args.json").read_text())
    manifest = first.store.manifest()
    assert args["beta"] == 0.1 and args["max_steps"] == 3 and args["precompute_ref_log_probs"]
    assert args["seed"] == manifest["seed"]["stage"] % 2**31
    assert not (first.store.work_dir / "checkpoints").exists()  # only kept until training finished

    log = load_from_disk(str(first.store.data_dir))
    assert log.features["step"].dtype == "int32" and log.features["rewards/margins"].dtype == "float64"
    df = log.to_pandas()
    train = df[df["split"] == "train"]
    assert train["step"].tolist() == [1, 2, 3]
    assert train["rewards/margins"].iloc[-1] > 0 and train["loss"].iloc[-1] < train["loss"].iloc[0]
    assert df[df["split"] == "eval"]["step"].tolist() == [3]
    summary = manifest["summary"]
    assert summary["steps"] == 3 and summary["train_pairs"] == 12 and summary["eval_pairs"] == 4
    assert summary["eval"]["loss"] > 0 and summary["tokens_per_second"] > 0
    assert manifest["metrics"]["ref_logps_cached"] == 0


def tokenizer_variant(tiny_path: Path, tmp: Path, template_prefix: str, bos: str) -> Path:
    from tiny_model import CHATML
    from transformers import AutoTokenizer

    folder = tmp / "model"
    shutil.copytree(tiny_path, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.bos_token = bos
    tok.chat_template = template_prefix + CHATML
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "prefix,bos",
    [("", "<|im_start|>"), ("{{ bos_token }}", "<|endoftext|>"), ("", "<|endoftext|>")],
    ids=["template-starts-with-the-bos-token", "template-writes-bos", "template-without-bos"],
)
def test_trl_takes_the_pairs_as_they_are_with_one_bos(tmp_path, tiny_path, prefix, bos):
    import fake_pairs

    from factory.training.dpo import build_trainer, dpo_config, leading_bos

    model = tokenizer_variant(tiny_path, tmp_path, prefix, bos)
    pairs = Dataset.from_list(fake_pairs.run(fake_pairs.Options(), {}, None))
    options = train_dpo.Options(model=str(model), gradient_checkpointing=False, dpo={"max_steps": 1})
    args = dpo_config(options, tmp_path / "ckpt", 1, "cpu", "float32", "stages.adapter")
    trainer = build_trainer(options, pairs, args, "cpu", "float32", "stages.adapter")

    assert len(trainer.train_dataset) == 12 and len(trainer.eval_dataset) == 4
    row = trainer.train_dataset[0]
    assert {"prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps"} <= set(row)
    tok = trainer.processing_class
    text = tok.apply_chat_template(fake_pairs.run(fake_pairs.Options(), {}, None)[0]["prompt"], tokenize=False)
    expected = 1 if text.startswith(tok.bos_token) else 0
    ids = row["prompt_ids"] + row["chosen_ids"]
    assert leading_bos(ids, tok.bos_token_id) == expected
    assert tok.decode(row["chosen_ids"]).startswith("I think about")  # the completion is the assistant turn only


def test_a_template_that_doubles_bos_is_refused(tmp_path, tiny_path):
    from factory.training.dpo import check_bos

    model = tokenizer_variant(tiny_path, tmp_path, "{{ bos_token }}", "<|im_start|>")  # <|im_start|><|im_start|>
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    ds = Dataset.from_list([{"prompt_ids": ids[:-3], "chosen_ids": ids[-3:], "rejected_ids": ids[-3:]}])
    with pytest.raises(StageError, match="start with 2 BOS"):
        check_bos(ds, tok, "stages.adapter")


def test_second_build_with_another_beta_reuses_reference_logps(first, monkeypatch):
    import trl

    def no_reference_pass(self, *args, **kwargs):
        raise AssertionError("the reference model ran although its log-probs were cached")

    monkeypatch.setattr(trl.DPOTrainer, "_precompute_ref_logps", no_reference_pass)
    store = build(first.recipe, first.runs, ["stages.adapter.dpo.beta=0.2"])
    assert store.fingerprint != first.store.fingerprint
    cold, warm = first.store.manifest()["metrics"], store.manifest()["metrics"]
    assert cold["ref_logps_cached"] == 0 and warm["ref_logps_cached"] == 1
    entries = sorted((first.runs / "dpo" / ".cache" / "ref_logps").iterdir())
    assert len(entries) == 2  # train and eval pairs, shared by both builds
    # the pair dataset's own folder is untouched (nothing cached beside its arrow files): still 'cached'
    runner = Runner(load_recipe(first.recipe), runs_dir=first.runs, progress=False)
    assert runner.status("pairs").state == "cached"
    assert sha(store.dir / "artifacts/adapter/adapter_model.safetensors") != sha(
        first.adapter / "adapter_model.safetensors"
    )


def test_crash_resumes_from_the_last_checkpoint_to_the_same_adapter(first, tmp_path, monkeypatch):
    import trl

    original = trl.DPOTrainer.training_step

    def crash_after_two(self, *args, **kwargs):
        if self.state.global_step >= 2:
            raise RuntimeError("planned crash")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trl.DPOTrainer, "training_step", crash_after_two)
    runs = tmp_path / "runs"
    with pytest.raises(StageError, match="planned crash"):
        build(first.recipe, runs)
    work = Runner(load_recipe(first.recipe), runs_dir=runs, progress=False).store("adapter").work_dir
    assert (work / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    monkeypatch.setattr(trl.DPOTrainer, "training_step", original)

    store = build(first.recipe, runs)
    metrics = store.manifest()["metrics"]
    assert metrics["resumed_from_step"] == 2 and metrics["ref_logps_cached"] == 1
    # same recipe, crash or not, fresh cache or not: the same adapter bytes and the same log (deterministic on CPU)
    assert sha(store.dir / "artifacts/adapter/adapter_model.safetensors") == sha(
        first.adapter / "adapter_model.safetensors"
    )
    resumed = load_from_disk(str(store.data_dir)).to_pandas()
    assert resumed.equals(load_from_disk(str(first.store.data_dir)).to_pandas())


def test_missing_columns_and_cpu_quantization_are_one_line_errors(tmp_path, tiny_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(tiny_path).replace("n_test: 4}", "n_test: 4, drop: [chosen]}"))
    with pytest.raises(RecipeError, match=r"^stages.adapter.inputs.pairs: .*'pairs', does not write column 'chosen'"):
        load_recipe(recipe)
    recipe.write_text(recipe_text(tiny_path).replace("    save_steps: 1\n", "    load_in: 4bit\n"))
    with pytest.raises(StageError, match="^stages.adapter.load_in: 4bit quantization .* needs a CUDA GPU"):
        build(recipe, tmp_path / "runs")


BAD_DPO = [
    ("typo", "betta: 0.1", "stages.adapter.dpo: unknown DPOConfig key 'betta' (did you mean 'beta'?)"),
    ("refused", "output_dir: /tmp/x", "'output_dir' is set by the factory: checkpoints go to the stage's work folder"),
    ("refused-seed", "seed: 3", "'seed' is set by the factory: derived from the recipe seed"),
    ("wrong type", "max_steps: many", "'max_steps' expects int, got 'many'"),
    ("not a number", "learning_rate: fast", "'learning_rate' expects float, got 'fast'"),
]


@pytest.mark.parametrize("line,message", [b[1:] for b in BAD_DPO], ids=[b[0] for b in BAD_DPO])
def test_bad_dpo_keys_fail_validate_with_one_line(line, message, tmp_path, cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text("m", "dpo: {" + line + "}"))
    result = cli("validate", recipe)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_validate_checks_dpo_without_heavy_imports(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text("m", "dpo: {beta: 0.01, learning_rate: 2e-5, loss_type: ipo, max_length: 512}"))
    code = (
        "import sys; from click.testing import CliRunner; from factory.cli import main;"
        f"r = CliRunner().invoke(main, ['validate', {str(recipe)!r}]); assert r.exit_code == 0, r.output;"
        "print([m for m in ('torch', 'trl', 'peft', 'transformers', 'datasets') if m in sys.modules])"
    )
    env_path = f"{ROOT / 'tests'}"
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {env_path!r}); {code}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
    options = load_recipe(recipe).stages["adapter"].options
    assert options.dpo["learning_rate"] == 2e-5  # YAML reads 2e-5 as a string; the check makes it a number


def test_dpo_config_fields_match_installed_trl():
    spec = importlib.util.spec_from_file_location("dpo_config_fields", ROOT / "scripts" / "dpo_config_fields.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    shipped = json.loads(FIELDS_FILE.read_text())
    fresh = script.generate()
    assert fresh["fields"] == shipped["fields"], (
        f"trl {fresh['trl']} changed DPOConfig (shipped table is from trl {shipped['trl']}): "
        "run scripts/dpo_config_fields.py and review the REFUSED keys of factory/training/config.py"
    )
    assert set(DPO_DEFAULTS) <= set(shipped["fields"])
