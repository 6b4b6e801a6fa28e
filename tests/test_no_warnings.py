"""No avoidable warnings: no ``pin_memory`` on a machine without CUDA, and recipe launch lines that make accelerate
print none of its "defaults used instead" lines."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from hf_select.training import TrainConfig, build_sft_config, to_prompt_completion

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()
PIN_WARNING = "pin_memory"


def _first_batch_warnings(tiny_lm_path, tmp_path, config: TrainConfig) -> list[str]:
    """Warnings raised while the SFT trainer's DataLoader yields its first batch (no training step)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    tok = AutoTokenizer.from_pretrained(tiny_lm_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path)
    rows = Dataset.from_list([{"instruction": f"Add {i} and 2", "input": "", "output": str(i + 2)} for i in range(4)])
    trainer = SFTTrainer(model=model, args=build_sft_config(config, tmp_path / "run"),
                         train_dataset=to_prompt_completion(rows), processing_class=tok)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        next(iter(trainer.get_train_dataloader()))
    return [str(w.message) for w in caught]


@pytest.mark.skipif(not NO_CUDA, reason="pinned memory is wanted, and silent, where CUDA is available")
def test_cpu_sft_config_turns_pin_memory_off_and_the_dataloader_does_not_warn(tiny_lm_path, tmp_path):
    config = TrainConfig(per_device_train_batch_size=2, max_length=64, precision="fp32")
    assert build_sft_config(config, tmp_path / "a").dataloader_pin_memory is False
    assert not [w for w in _first_batch_warnings(tiny_lm_path, tmp_path, config) if PIN_WARNING in w]
    # the user's own choice stays, and then torch warns: the check above can see the warning
    pinned = TrainConfig(per_device_train_batch_size=2, max_length=64, precision="fp32",
                         sft_kwargs={"dataloader_pin_memory": True})
    assert build_sft_config(pinned, tmp_path / "b").dataloader_pin_memory is True
    assert [w for w in _first_batch_warnings(tiny_lm_path, tmp_path, pinned) if PIN_WARNING in w]


def _launch(tmp_path, *launch_args: str) -> str:
    script = tmp_path / "hello.py"
    script.write_text("print('launched')\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home")}  # no `accelerate config` default file
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *launch_args, str(script)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "launched" in proc.stdout
    return proc.stdout + proc.stderr


def test_the_readme_launch_config_makes_accelerate_print_no_defaults(tmp_path):
    quiet = _launch(tmp_path, "--config_file", "recipes/accelerate/single_gpu.yaml")
    assert "defaults used instead" not in quiet and "was set to" not in quiet, quiet
    readme = (ROOT / "README.md").read_text()
    assert "accelerate launch --config_file recipes/accelerate/single_gpu.yaml recipes/" in readme
    bare = _launch(tmp_path)  # without a config file accelerate fills in defaults and says so
    assert "defaults used instead" in bare and "--num_processes" in bare
