"""Recipe arguments over TRL's parser: TrainConfig's SFTConfig fields passed on by introspection, any other SFTConfig
field accepted at the top level (checked by TRL's parser over SFTConfig), trl's dataset names with the old ones still
read (a FutureWarning), and unknown keys failing."""

from __future__ import annotations

import dataclasses
import glob
import warnings
from importlib import import_module
from pathlib import Path

import pytest

from hf_select.recipes.arguments import RecipeArguments, args_to_cli, parse_recipe_args
from hf_select.stages import StageRunner, data_stage
from hf_select.training import OWN_TRAIN_FIELDS, TrainConfig, build_sft_config, owned_sft_fields

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(glob.glob(str(ROOT / "recipes" / "configs" / "*.yaml")))


def _sft_names() -> set[str]:
    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(SFTConfig)}


def test_every_train_config_field_is_an_sft_config_field_and_reaches_it(tmp_path):
    passed = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in OWN_TRAIN_FIELDS]
    assert set(passed) <= _sft_names()
    assert not set(OWN_TRAIN_FIELDS) & _sft_names()
    changed = {"learning_rate": 1e-4, "num_train_epochs": 2.0, "max_steps": 7, "per_device_train_batch_size": 3,
               "per_device_eval_batch_size": 5, "gradient_accumulation_steps": 2, "max_length": 77,
               "warmup_steps": 4.0, "lr_scheduler_type": "linear", "weight_decay": 0.25, "logging_steps": 3,
               "report_to": "tensorboard", "seed": 11, "save_steps": 13, "chat_template_path": "t.jinja",
               "gradient_checkpointing": True}
    assert set(changed) == set(passed)  # a new passed field must be added here, with a non-default value
    sft = build_sft_config(TrainConfig(**changed), tmp_path)
    for name, value in changed.items():
        if name == "gradient_checkpointing":
            name = "activation_checkpointing" if "activation_checkpointing" in _sft_names() else name
        got = getattr(sft, name)
        got = [str(x) for x in got] if name == "report_to" else getattr(got, "value", got)
        assert got == ([value] if name == "report_to" else value), name
    assert set(owned_sft_fields()) == set(passed) | {"output_dir", "bf16", "fp16", "activation_checkpointing",
                                                     "data_seed", "save_strategy", "completion_only_loss",
                                                     "push_to_hub", "remove_unused_columns"}


def test_any_other_sft_config_field_at_the_top_level(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("dataset_name: demo:10\noutput_dir: out\noptim: adamw_torch\npacking: true\n"
                   "sft_kwargs: {max_grad_norm: 0.5}\n")
    args = parse_recipe_args(RecipeArguments, ["--config", str(cfg), "--neftune_noise_alpha", "5"])
    assert args.sft_kwargs == {"max_grad_norm": 0.5, "optim": "adamw_torch", "packing": True,
                               "neftune_noise_alpha": 5.0}
    sft = build_sft_config(args.train_config(), tmp_path / "run")
    assert (getattr(sft.optim, "value", sft.optim), sft.packing, sft.neftune_noise_alpha, sft.max_grad_norm) == (
        "adamw_torch", True, 5.0, 0.5)
    plain = parse_recipe_args(RecipeArguments, ["--dataset_name", "demo:10", "--output_dir", "o"])
    assert plain.sft_kwargs is None  # nothing extra: the same training config (and stage keys) as before


@pytest.mark.parametrize(("yaml_text", "flags", "match"), [
    ("not_a_field: 3\n", [], "not_a_field"),
    ("", ["--not_a_flag", "1"], "not_a_flag"),
    ("bf16: true\n", [], r"sets \['bf16'\]"),  # hf-select derives it from precision
    ("optim: adamw_torch\nsft_kwargs: {optim: sgd}\n", [], "both at the top level and in sft_kwargs"),
])
def test_unknown_or_owned_keys_fail_with_their_name(tmp_path, yaml_text, flags, match):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dataset_name: demo:10\noutput_dir: out\n" + yaml_text)
    with pytest.raises(ValueError, match=match):
        parse_recipe_args(RecipeArguments, ["--config", str(cfg), *flags])


def test_old_dataset_names_still_read_with_a_warning(tmp_path):
    with pytest.warns(FutureWarning, match="dataset is deprecated: use dataset_name"):
        old = RecipeArguments(dataset="demo:12", output_dir="o")
    with pytest.warns(FutureWarning, match="split is deprecated: use dataset_train_split"):
        old_split = RecipeArguments(dataset_name="demo:12", output_dir="o", split="test")
    assert (old.dataset_name, old.dataset, old_split.dataset_train_split) == ("demo:12", "demo:12", "test")
    new = RecipeArguments(dataset_name="demo:12", output_dir="o")
    assert args_to_cli(old) == args_to_cli(new) == ["--dataset_name", "demo:12", "--output_dir", "o"]
    with pytest.raises(ValueError, match="dataset is the old name of dataset_name; set only dataset_name"):
        RecipeArguments(dataset="a.json", dataset_name="b.json", output_dir="o")
    cfg = tmp_path / "old.yaml"
    cfg.write_text("dataset: demo:12\nsplit: validation\noutput_dir: out\n")
    with pytest.warns(FutureWarning):
        parsed = parse_recipe_args(RecipeArguments, ["--config", str(cfg)])
    assert (parsed.dataset_name, parsed.dataset_train_split) == ("demo:12", "validation")
    with pytest.warns(FutureWarning):
        flagged = parse_recipe_args(RecipeArguments, ["--dataset", "demo:12", "--output_dir", "o"])
    assert flagged.dataset_name == "demo:12"


def test_a_flag_overrides_the_yaml_whichever_name_either_uses(tmp_path):
    new_yaml, old_yaml = tmp_path / "new.yaml", tmp_path / "old.yaml"
    new_yaml.write_text("dataset_name: demo:1000\noutput_dir: out\n")
    old_yaml.write_text("dataset: demo:1000\noutput_dir: out\n")
    for cfg, flag in ((new_yaml, "--dataset"), (old_yaml, "--dataset_name"), (old_yaml, "--dataset=demo:24")):
        flags = [flag] if "=" in flag else [flag, "demo:24"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            args = parse_recipe_args(RecipeArguments, ["--config", str(cfg), *flags])
        assert args.dataset_name == "demo:24", (cfg.name, flag)
        assert any(issubclass(w.category, FutureWarning) for w in caught)
    both = tmp_path / "both.yaml"
    both.write_text("dataset: demo:10\ndataset_name: demo:20\noutput_dir: out\n")
    with pytest.raises(ValueError, match="both dataset .* and dataset_name"):
        parse_recipe_args(RecipeArguments, ["--config", str(both)])


def test_the_old_and_the_new_name_give_the_same_data_stage(tmp_path):
    with pytest.warns(FutureWarning):
        old = RecipeArguments(dataset="demo:12", output_dir=str(tmp_path))
    first = StageRunner(tmp_path)
    data_stage(first, old)
    again = StageRunner(tmp_path)
    data_stage(again, RecipeArguments(dataset_name="demo:12", output_dir=str(tmp_path)))
    assert [i.reused for i in first.infos + again.infos] == [False, True]
    assert first.infos[0].params["dataset"] == "demo:12"  # the stage key's field names did not change


@pytest.mark.parametrize("config", CONFIGS, ids=[Path(c).name for c in CONFIGS])
def test_shipped_configs_use_the_new_names(config):
    recipe = next(r for r in ("instruct_mining", "superfilter", "cherry", "mods") if Path(config).name.startswith(r))
    module = import_module(f"hf_select.recipes.{recipe}")
    args_class = next(v for k, v in vars(module).items() if k.endswith("Arguments") and k != "RecipeArguments")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = parse_recipe_args(args_class, ["--config", config])
    assert args.dataset_name and args.sft_kwargs is None
