"""The wheel is the product: built from the checkout, installed into a folder outside it, the recipes, their shipped
configs, the card templates and the CLI all work from there (no file of the checkout is read)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip wheel`` of a copy of the checkout (no network, no build isolation; a copy, so that setuptools'
    ``build/`` folder never lands in the checkout or carries stale modules into the wheel), ``pip install --target``
    of it."""
    pytest.importorskip("setuptools")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "runs", "demo_out", ".device", "__pycache__", ".ruff_cache"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(work / "dist"), str(source)], capture_output=True, text=True, timeout=300,
                           cwd=work)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (work / "dist").glob("hf_select-*.whl")
    target = work / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300, cwd=work)
    assert inst.returncode == 0, inst.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HF_SELECT_CARD_TEMPLATES", None)
    return {"wheel": wheel, "target": target, "env": env, "cwd": work}


def _run(installed, *args, timeout=600):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env=installed["env"], cwd=installed["cwd"])


def test_wheel_ships_recipes_configs_and_card_templates(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    modules = {n for n in names if n.startswith("hf_select/") and n.endswith(".py")}
    assert modules == {str(p.relative_to(ROOT)) for p in (ROOT / "hf_select").rglob("*.py")}  # no stale module
    for recipe in ("superfilter", "cherry", "mods", "instruct_mining"):
        assert f"hf_select/recipes/{recipe}.py" in names
    shipped = {n for n in names if n.startswith("hf_select/recipes/configs/")}
    assert {Path(n).name for n in shipped} == {p.name for p in (ROOT / "recipes" / "configs").glob("*.yaml")}
    assert "hf_select/model_cards/model_card.md.j2" in names and "hf_select/model_cards/dataset_card.md.j2" in names
    assert "hf_select/recipes/accelerate/multi_gpu.yaml" in names
    accelerate_configs = {Path(n).name for n in names if n.startswith("hf_select/recipes/accelerate/")}
    assert accelerate_configs == {p.name for p in (ROOT / "recipes" / "accelerate").glob("*.yaml")}
    assert {"fsdp.yaml", "zero3.yaml"} <= accelerate_configs


def test_installed_package_is_the_one_imported_and_cli_help_works(installed):
    where = _run(installed, "-c", "import hf_select, hf_select.hub as h; print(hf_select.__file__); "
                                  "print(h.templates_dir())")
    assert where.returncode == 0, where.stderr[-2000:]
    module, templates = where.stdout.split()
    assert Path(module).is_relative_to(installed["target"]) and Path(templates).is_relative_to(installed["target"])
    helped = _run(installed, "-m", "hf_select.cli", "demo", "--help")
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "demo" in helped.stdout


def test_recipe_and_cards_run_from_the_installed_wheel(installed, tiny_lm_path):
    """``python -m hf_select.recipes.superfilter --config superfilter_smollm2`` (a shipped config by its stem) with
    a tiny model: it trains, and the cards render from the wheel's templates."""
    out = installed["cwd"] / "run"
    ran = _run(installed, "-m", "hf_select.recipes.superfilter", "--config", "superfilter_smollm2",
               "--dataset", "demo:24", "--model_name_or_path", str(tiny_lm_path),
               "--ifd_model_name_or_path", str(tiny_lm_path), "--ifd_fraction", "0.25", "--score_max_length", "256",
               "--max_length", "96", "--num_train_epochs", "1", "--per_device_train_batch_size", "2",
               "--precision", "fp32", "--eval_dataset", "demo:4", "--output_dir", str(out))
    assert ran.returncode == 0, ran.stderr[-3000:]
    card = (out / "hub" / "model" / "README.md").read_text(encoding="utf-8")
    assert "superfilter" in card.lower() or "superfiltering" in card.lower()
    assert (out / "hub" / "dataset" / "README.md").is_file()
    stages = [json.loads(x)["stage"] for x in (out / "stages.jsonl").read_text().splitlines()]
    assert "train" in stages and "hub" in stages
