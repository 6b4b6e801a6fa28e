"""Training at scale on CPU: TRL's ModelConfig fields (LoRA through ``get_peft_config``, the model dtype, attention)
read from a recipe's YAML and flags, a LoRA recipe end to end (adapter saved, reloaded on its base for necessity
generation and the held-out loss, the card naming base and adapter), the training dtype choice, the sharded
accelerate configs (FSDP, ZeRO-3) parsed by accelerate's own launcher, and train_sft's final save under FSDP's
sharded state dict. FSDP training itself needs GPUs (accelerate enables it only for GPU-type devices): the GPU suite's
fsdp_resume stage (benchmarks/device_stages.py) trains, kills, resumes and loads under recipes/accelerate/fsdp.yaml."""

from __future__ import annotations

import json
import os
from importlib import import_module
from pathlib import Path
from unittest import mock

import pytest

from hf_select.recipes.arguments import RecipeArguments, args_to_cli, parse_recipe_args
from hf_select.training import MODEL_CONFIG_FIELDS, TrainConfig, TrainSettingError, training_dtype

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = ROOT / "recipes" / "accelerate"

peft = pytest.importorskip("peft")


# -- ModelConfig fields ----------------------------------------------------------------------------------------------
def test_model_config_fields_are_trl_model_config_fields():
    import dataclasses

    from trl import ModelConfig

    theirs = {f.name: f for f in dataclasses.fields(ModelConfig)}
    ours = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in MODEL_CONFIG_FIELDS:
        assert name in theirs and name in ours, name
        assert ours[name].metadata["help"].startswith(f"trl.ModelConfig.{name}"), name
        if name != "dtype":  # hf-select's default: None, its own choice (training_dtype)
            assert ours[name].default == theirs[name].default, name


def test_model_config_keys_from_yaml_and_flags(tmp_path):
    from trl import get_peft_config

    cfg = tmp_path / "lora.yaml"
    cfg.write_text("dataset_name: demo:10\noutput_dir: out\nuse_peft: true\nlora_r: 4\nlora_alpha: 8\n"
                   "lora_dropout: 0.1\nlora_target_modules: [q_proj, v_proj]\nattn_implementation: eager\n"
                   "dtype: float32\n")
    args = parse_recipe_args(RecipeArguments, ["--config", str(cfg)])
    assert (args.use_peft, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules,
            args.attn_implementation, args.dtype) == (True, 4, 8, 0.1, ["q_proj", "v_proj"], "eager", "float32")
    assert args.sft_kwargs is None  # TrainConfig fields, not SFTConfig extras
    flagged = parse_recipe_args(RecipeArguments, ["--config", str(cfg), "--lora_r", "2", "--lora_target_modules",
                                                  "all-linear", "--dtype", "bfloat16"])
    assert (flagged.lora_r, flagged.lora_target_modules, flagged.dtype) == (2, "all-linear", "bfloat16")
    lora = get_peft_config(flagged.train_config().model_config("m"))
    assert (lora.r, lora.lora_alpha, lora.target_modules, lora.lora_dropout) == (2, 8, "all-linear", 0.1)
    # the Reproduce line gives the same arguments back
    again = parse_recipe_args(RecipeArguments, args_to_cli(args))
    assert again.train_config() == args.train_config()
    assert TrainConfig(use_peft=True).to_dict() != TrainConfig().to_dict()  # part of the sft stage's key


@pytest.mark.parametrize(("text", "match"), [
    ("load_in_8bit: true\n", r"\['load_in_8bit'\] are trl.ModelConfig fields that hf-select does not take"),
    ("dtype: float64\n", "dtype must be one of"),
    ("use_peft: true\nlora_dropout: 1.5\n", r"lora_dropout must be in \[0, 1\)"),
    ("load_in_4bit: true\n", "load_in_4bit trains a LoRA adapter on a 4-bit base"),
])
def test_bad_model_config_keys_fail_named(tmp_path, text, match):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dataset_name: demo:10\noutput_dir: out\n" + text)
    with pytest.raises(ValueError, match=match):
        parse_recipe_args(RecipeArguments, ["--config", str(cfg)])


def test_4bit_without_a_gpu_and_peft_without_peft_are_one_line(tmp_path, capsys):
    mods = import_module("hf_select.recipes.mods")
    out = tmp_path / "run"
    with mock.patch("torch.cuda.is_available", return_value=False):
        rc = mods.main(["--dataset_name", "demo:8", "--output_dir", str(out), "--use_peft", "true",
                        "--load_in_4bit", "true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and not out.exists()
    assert err[0].startswith("hf-select: error: load_in_4bit needs a CUDA GPU") and "load_in_4bit false" in err[0]
    import importlib.util

    real = importlib.util.find_spec
    no_peft = mock.patch("importlib.util.find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    with no_peft, pytest.raises(TrainSettingError, match=r"use_peft needs the peft package: pip install 'hf-select"):
        TrainConfig(use_peft=True)


def test_training_dtype():
    gpu = {"cuda": True, "bf16_supported": True}
    for kind in ({"frozen_base": True}, {"sharded": True}):  # LoRA; FSDP / ZeRO (fp32 master shards)
        assert training_dtype(None, "auto", **gpu, **kind) == "bfloat16", kind
        assert training_dtype(None, "bf16", **gpu, **kind) == "bfloat16", kind
        assert training_dtype(None, "fp32", **gpu, **kind) == "float32", kind  # asked
        assert training_dtype(None, "fp16", **gpu, **kind) == "float32", kind  # the fp16 scaler needs fp32 weights
        assert training_dtype(None, "auto", cuda=True, bf16_supported=False, **kind) == "float32", kind  # a V100
        assert training_dtype(None, "bf16", cuda=False, bf16_supported=False, **kind) == "float32", kind  # CPU
    # a full fine-tune on one GPU / DDP: fp32 master weights (AdamW on bf16 weights drops small updates)
    assert training_dtype(None, "auto", sharded=False, **gpu) == "float32"
    with mock.patch.dict(os.environ, {"ACCELERATE_USE_FSDP": "true"}):
        assert training_dtype(None, "auto", **gpu) == "bfloat16"  # what accelerate launch --config_file fsdp.yaml sets
    assert training_dtype(None, "auto", quantized=True, **gpu) == "bfloat16"
    assert training_dtype("float32", "auto", **gpu) == "float32" and training_dtype("auto", "fp32", **gpu) == "auto"
    assert TrainConfig(dtype=None, precision="fp32").model_config().dtype == "float32"


# -- a LoRA recipe end to end ----------------------------------------------------------------------------------------
def test_mods_with_lora_end_to_end(tmp_path, tiny_lm_path, tiny_classifier_path):
    """Seed and final models are LoRA adapters; the necessity stage generates with the seed adapter on its base,
    the eval stage loads the final adapter, and the card says it is an adapter of the base."""
    import torch

    from hf_select.models import adapter_base, load_causal_lm
    from hf_select.stages import load_stage_dataset

    mods = import_module("hf_select.recipes.mods")
    cfg = tmp_path / "lora.yaml"
    cfg.write_text(f"dataset_name: demo:24\noutput_dir: {tmp_path / 'run'}\nmodel_name_or_path: {tiny_lm_path}\n"
                   f"quality_backend: reward\nquality_model_name_or_path: {tiny_classifier_path}\n"
                   f"quality_fraction: 0.75\nembed_model_name_or_path: {tiny_lm_path}\nseed_count: 4\n"
                   "necessity_count: 3\nnecessity_fraction: 0.5\nnecessity_max_new_tokens: 4\nscore_max_length: 256\n"
                   "max_length: 96\nnum_train_epochs: 1\nlearning_rate: 0.01\nper_device_train_batch_size: 2\n"
                   "eval_dataset: demo:4\nprecision: fp32\nlogging_steps: 50\nreport: false\n"
                   "use_peft: true\nlora_r: 4\nlora_alpha: 8\nlora_target_modules: all-linear\n")
    args = parse_recipe_args(mods.MoDSArguments, ["--config", str(cfg)])
    summary = mods.run_mods(args)
    out = Path(args.output_dir)
    for stage in ("seed_model", "train"):
        folder = out / stage
        assert (folder / "adapter_model.safetensors").is_file() and not (folder / "model.safetensors").exists()
        assert adapter_base(folder) == str(tiny_lm_path)  # the name the run was given
        params = json.loads((folder / "stage.json").read_text())["params"]["train"]
        assert (params["use_peft"], params["lora_r"], params["lora_target_modules"]) == (True, 4, "all-linear")
        lora = json.loads((folder / "adapter_config.json").read_text())
        assert lora["r"] == 4 and lora["peft_type"] == "LORA"

    # the necessity answers came from the seed adapter on its base
    necessity = json.loads((out / "necessity" / "stage.json").read_text())["params"]["config"]
    assert necessity["model_name_or_path"] == str(out / "seed_model")
    assert "generated_response" in load_stage_dataset(out / "necessity").column_names
    # reloaded: base + adapter, merged; the same outputs as the unmerged PeftModel, other than the base's
    merged, tok = load_causal_lm(str(out / "seed_model"), dtype="float32", device="cpu")
    base, _ = load_causal_lm(str(tiny_lm_path), dtype="float32", device="cpu")
    from peft import PeftModel

    unmerged = PeftModel.from_pretrained(load_causal_lm(str(tiny_lm_path), dtype="float32", device="cpu")[0],
                                         str(out / "seed_model")).eval()
    ids = tok("Add 2 and 3.", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b, c = merged(ids).logits, unmerged(ids).logits, base(ids).logits
    assert torch.allclose(a, b, atol=1e-4) and not torch.allclose(a, c, atol=1e-4)
    assert type(merged).__name__ == "LlamaForCausalLM"

    # eval ran on the final adapter; the card names base and adapter
    assert summary["eval"]["loss"] > 0
    card = (out / "hub" / "model" / "README.md").read_text()
    assert "a LoRA adapter of" in card and "rank 4, alpha 8, on all-linear" in " ".join(card.split())
    assert "AutoPeftModelForCausalLM" in card and "library_name: peft" in card
    assert (out / "hub" / "model" / "adapter_model.safetensors").is_file()
    assert "--use_peft true" in (out / "hub" / "dataset" / "README.md").read_text()  # the Reproduce line


# -- the sharded accelerate configs ----------------------------------------------------------------------------------
def _launch_args(config: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config), "recipes/mods.py"])
    return _validate_launch_command(args)[0]


def _fsdp_plugin(args):
    """The FSDP plugin the Trainer's Accelerator builds from the environment ``accelerate launch`` sets."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    env = prepare_multi_gpu_env(args)
    with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_"))}):
        return FullyShardedDataParallelPlugin()


def test_fsdp_config_parses_as_full_shard_layer_wrap_sharded_state():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    assert load_config_from_file(str(ACCELERATE / "fsdp.yaml")).distributed_type == DistributedType.FSDP
    args = _launch_args(ACCELERATE / "fsdp.yaml")
    plugin = _fsdp_plugin(args)
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # FSDP2's full shard
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert plugin.cpu_ram_efficient_loading and plugin.activation_checkpointing
    assert args.mixed_precision == "no"  # precision comes from the recipe


def test_the_final_save_under_sharded_fsdp_gathers_the_whole_model():
    """Under fsdp.yaml's SHARDED_STATE_DICT, transformers' ``Trainer.save_model`` writes no weights and no config
    (it saves only for FULL_STATE_DICT: a model folder with just the tokenizer; seen with FSDP forced onto gloo CPU
    processes, which accelerate itself never does). ``train_sft`` saves the final model with the plugin switched to
    FULL_STATE_DICT (accelerate gathers it whole on the first process) and switches it back, also on an error. The
    FSDP train + resume itself runs on a GPU only: the GPU suite's fsdp_resume stage."""
    from types import SimpleNamespace

    from hf_select.training.trainer import _save_final_model

    plugin = _fsdp_plugin(_launch_args(ACCELERATE / "fsdp.yaml"))
    seen = []

    class FakeTrainer:
        is_fsdp_enabled = True
        accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin))

        def save_model(self, output_dir):
            seen.append((output_dir, plugin.state_dict_type.name))
            if output_dir == "broken":
                raise OSError("disk full")

    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    _save_final_model(FakeTrainer(), Path("run"))
    assert seen == [("run", "FULL_STATE_DICT")] and plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    with pytest.raises(OSError, match="disk full"):
        _save_final_model(FakeTrainer(), "broken")
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"

    plain = FakeTrainer()  # DDP / one process: the plugin (if any) is not touched
    plain.is_fsdp_enabled = False
    seen.clear()
    _save_final_model(plain, "run")
    assert seen == [("run", "SHARDED_STATE_DICT")]


def test_zero3_config_parses_as_deepspeed_stage_3():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    loaded = load_config_from_file(str(ACCELERATE / "zero3.yaml"))
    assert loaded.distributed_type == DistributedType.DEEPSPEED
    args = _launch_args(ACCELERATE / "zero3.yaml")
    assert args.use_deepspeed and int(args.zero_stage) == 3
    assert args.zero3_init_flag and args.zero3_save_16bit_model and args.offload_param_device == "none"


def test_the_8b_config_is_full_fine_tuning_in_bf16_with_its_memory_documented():
    mods = import_module("hf_select.recipes.mods")
    config = ROOT / "recipes" / "configs" / "mods_llama3_8b.yaml"
    args = parse_recipe_args(mods.MoDSArguments, ["--config", str(config)])
    assert (args.use_peft, args.precision, args.dtype, args.gradient_checkpointing) == (False, "bf16", "bfloat16",
                                                                                        False)
    text = config.read_text()
    assert "recipes/accelerate/fsdp.yaml" in text and "COMPUTED, NOT MEASURED" in text
    assert "N = 8: 16.1 GB" in text  # 8.03e9 parameters x 16 bytes / 8
    assert round(8.03e9 * 16 / 8 / 1e9, 1) == 16.1
