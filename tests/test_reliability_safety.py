"""Safety: trust_remote_code is off unless asked for; models load from safetensors where available; outputs are
Arrow/JSON/Parquet (never pickles); Hub tokens never reach logs, cards, outputs or error messages; pushing makes
private repositories unless the user passes an explicit flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import re
import zipfile
from pathlib import Path

import pytest
import torch

from hf_select.cli import main

ROOT = Path(__file__).resolve().parents[1]
ENV_TOKEN = "hf_" + "EnvTokenEnvTokenEnvToken0123456789"[:34]
ARG_TOKEN = "hf_" + "ArgTokenArgTokenArgToken9876543210"[:34]
ROWS = [{"instruction": f"Name {i} colours.", "input": "", "output": ", ".join(["red", "blue", "green"][: i % 3 + 1])}
        for i in range(12)]
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".npy"}


def is_pickle(path: Path) -> bool:
    """A pickle, or a torch.save archive (a zip holding data.pkl), whatever the file is called."""
    head = path.read_bytes()[:2]
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return True
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return any(name.endswith(".pkl") for name in zf.namelist())
    return path.suffix in PICKLE_SUFFIXES


def pickles_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and is_pickle(p))


def files_holding(folder: Path, text: str) -> list[str]:
    needle = text.encode()
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes())


def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


# -- trust_remote_code ------------------------------------------------------------------------------------------------


def _config_classes() -> list[type]:
    from hf_select.scoring.registry import SCORERS, get_scorer_classes

    return [get_scorer_classes(name)[0] for name in SCORERS]


def test_trust_remote_code_is_off_by_default():
    for config_class in _config_classes():
        defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
        assert defaults.get("trust_remote_code") is False, config_class.__name__
    pattern = re.compile(r"trust_remote_code\s*[=:]\s*(True|true|yes|on|1)\b")
    sources = [*ROOT.glob("hf_select/**/*.py"), *ROOT.glob("recipes/**/*.py"), *ROOT.glob("recipes/**/*.yaml")]
    assert sources
    offenders = [str(p.relative_to(ROOT)) for p in sources if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_every_loader_passes_trust_remote_code_false(tiny_lm_path, tiny_classifier_path, monkeypatch):
    import transformers

    from hf_select.scoring.ifd import IFDConfig, IFDScorer
    from hf_select.scoring.quality import QualityConfig, QualityScorer
    from hf_select.training import load_model_for_training

    seen: list[tuple[str, object]] = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM,
                transformers.AutoModelForSequenceClassification):
        real = cls.from_pretrained.__func__

        def recording(klass, *args, _real=real, _name=cls.__name__, **kwargs):
            seen.append((_name, kwargs.get("trust_remote_code", False)))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(recording))
    IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path))).load()
    QualityScorer(QualityConfig(backend="reward", model_name_or_path=str(tiny_classifier_path))).load()
    load_model_for_training(str(tiny_lm_path))
    kinds = {name for name, _ in seen}
    assert {"AutoTokenizer", "AutoModelForCausalLM", "AutoModelForSequenceClassification"} <= kinds
    assert all(flag is False for _, flag in seen), seen
    seen.clear()
    IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), trust_remote_code=True)).load()
    assert seen and all(flag is True for _, flag in seen)  # the user can turn it on, explicitly


# -- safetensors ------------------------------------------------------------------------------------------------------


def test_models_load_from_safetensors_when_a_pickle_is_beside_them(tiny_lm_path, tiny_classifier_path, tmp_path):
    """A folder with both formats: the safetensors weights are the ones loaded (the pickle is never opened)."""
    import shutil

    from hf_select.models import load_causal_lm
    from hf_select.scoring.common import load_reward_model
    from hf_select.training import load_model_for_training

    for source, loaders in ((tiny_lm_path, (load_causal_lm, load_model_for_training)),
                            (tiny_classifier_path, (load_reward_model,))):
        folder = tmp_path / source.name
        shutil.copytree(source, folder)
        assert (folder / "model.safetensors").is_file()
        # a "pickle" that would fail loudly if anything tried to unpickle it
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x04this is not a state dict")
        for load in loaders:
            model = load(str(folder))[0]
            reference = load(str(source))[0]
            for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
                assert torch.equal(a.float(), b.float()), name


# -- outputs are never pickles ----------------------------------------------------------------------------------------


def test_cli_outputs_are_arrow_json_or_parquet(tiny_lm_path, tmp_path):
    data = data_file(tmp_path)
    out = tmp_path / "out"
    for fmt in ("disk", "jsonl", "parquet"):
        assert main(["score", "ifd", "--dataset", str(data), "--model", str(tiny_lm_path), "--output",
                     str(out / f"scored-{fmt}"), "--format", fmt]) == 0
    assert main(["select", "--dataset", str(out / "scored-disk"), "--output", str(out / "chosen"),
                 "--step", "{step: ifd_rule, count: 4}"]) == 0
    assert main(["report", "--dataset", str(out / "scored-disk"), "--selection", str(out / "chosen"),
                 "--output", str(out / "report"), "--score-columns", "ifd"]) == 0
    suffixes = {p.suffix for p in out.rglob("*") if p.is_file()}
    assert suffixes <= {".arrow", ".json", ".jsonl", ".parquet", ".md", ".png"}, suffixes
    assert pickles_under(out) == []


@pytest.fixture(scope="module")
def recipe_run(tiny_lm_path, tmp_path_factory):
    """One Superfiltering run with a token in the environment and one in the training arguments; everything it
    printed or logged, and its output folder."""
    from importlib import import_module

    if not (ROOT / "recipes" / "superfilter.py").is_file():
        pytest.skip("recipes/superfilter.py does not exist yet")
    tmp = tmp_path_factory.mktemp("safety-recipe")
    recipe = import_module("hf_select.recipes.superfilter")
    args = recipe.SuperfilterArguments(
        dataset=str(data_file(tmp)), output_dir=str(tmp / "run"), ifd_model_name_or_path=str(tiny_lm_path),
        model_name_or_path=str(tiny_lm_path), ifd_fraction=0.5, max_steps=1, per_device_train_batch_size=2,
        max_length=64, sft_kwargs={"hub_token": ARG_TOKEN}, hub_dataset_id="me/colours", hub_model_id="me/model",
    )
    printed = io.StringIO()
    handler = logging.StreamHandler(printed)
    log = logging.getLogger()
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed), \
                contextlib.redirect_stderr(printed):
            mp.setenv("HF_TOKEN", ENV_TOKEN)
            recipe.run_superfilter(args)
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    return tmp / "run", printed.getvalue()


def test_pushed_folders_hold_no_pickles_and_safetensors_weights(recipe_run):
    out, _ = recipe_run
    assert pickles_under(out / "hub") == []
    assert (out / "hub" / "model" / "model.safetensors").is_file()
    assert not list((out / "hub" / "model").glob("*.bin"))


def test_recipe_outputs_hold_no_pickles(recipe_run):
    out, _ = recipe_run
    assert pickles_under(out) == []


def test_environment_token_never_appears(recipe_run):
    out, printed = recipe_run
    assert ENV_TOKEN not in printed
    assert files_holding(out, ENV_TOKEN) == []


def test_token_in_training_arguments_never_reaches_cards_or_outputs(recipe_run):
    out, printed = recipe_run
    assert ARG_TOKEN not in printed
    assert files_holding(out, ARG_TOKEN) == []


def test_error_messages_never_show_a_token(tiny_lm_path, tmp_path, capsys):
    data = data_file(tmp_path)
    for args in (
        ["score", "ifd", "--dataset", f"https://user:{ARG_TOKEN}@example.invalid/rows.jsonl", "--output", "x"],
        ["score", "ifd", "--dataset", str(data), "--model", f"{ARG_TOKEN}/model", "--output", str(tmp_path / "o")],
        ["select", "--dataset", str(tmp_path / ARG_TOKEN), "--step", "{step: random, count: 1}", "--output", "x"],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "hf-select: error:" in err and "hf_***" in err
        assert ARG_TOKEN not in err


# -- pushing ----------------------------------------------------------------------------------------------------------


def test_push_is_private_unless_the_user_says_public(recipe_run, monkeypatch, capsys):
    import hf_select.models

    out, _ = recipe_run
    created = []

    class FakeApi:
        def __init__(self, token=None):
            assert token == ENV_TOKEN

        def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
            created.append((repo_id, private))

        def repo_info(self, repo_id, repo_type=None):
            return type("Info", (), {"private": dict(created)[repo_id]})()

        def upload_folder(self, folder_path, **kwargs):
            assert pickles_under(Path(folder_path)) == []
            assert files_holding(Path(folder_path), ENV_TOKEN) == []

    monkeypatch.setattr(hf_select.models, "hub_is_offline", lambda: False)
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    assert main(["push", str(out), "--hub_dataset_id", "me/colours", "--hub_model_id", "me/model"]) == 0
    assert created == [("me/colours", True), ("me/model", True)]
    created.clear()
    assert main(["push", str(out), "--hub_dataset_id", "me/colours", "--allow_public"]) == 0
    assert created == [("me/colours", False)]
    assert ENV_TOKEN not in capsys.readouterr().out


def test_recipes_do_not_push_or_go_public_by_default():
    from hf_select.recipes.arguments import RecipeArguments

    args = RecipeArguments(dataset="demo:10", output_dir="/tmp/never-written")
    assert args.push_to_hub is False and args.allow_public is False
