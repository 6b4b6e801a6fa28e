"""Shared fixtures: offline settings, tiny models built from configs, and the shared real data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"




def _pin_fp32_auto_dtype() -> None:
    """``dtype="auto"`` is fp32 in tests on every CPU: where bf16 measures faster (an AMD EPYC: 4x) ``auto`` would
    score in bf16 and the exactness checks (batch against alone, a score against its hand computation) would test
    bf16 rounding. Set for the whole session, not through a fixture, so that a test's ``monkeypatch.undo()`` keeps
    it; tests of the rule itself set the shipped threshold with ``monkeypatch``."""
    from hf_select import models

    models.CPU_BF16_MIN_SPEEDUP = float("inf")
    os.environ[models.CPU_AUTO_DTYPE_ENV] = "float32"  # child processes (interrupt tests) too


_pin_fp32_auto_dtype()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Run shards go to a per-session folder, never the user's cache (the converted offline models stay shared)."""
    monkeypatch.setenv("HF_SELECT_SCORES_DIR", str(tmp_path_factory.getbasetemp() / "scores"))


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory) -> Path:
    from hf_select.testing import make_tiny_lm

    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_lm_plain_path(tmp_path_factory) -> Path:
    """The tiny LM without a chat template (text templates only)."""
    from hf_select.testing import make_tiny_lm

    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm-plain"), chat_template=False)


@pytest.fixture(scope="session")
def tiny_classifier_path(tmp_path_factory) -> Path:
    from hf_select.testing import make_tiny_classifier

    return make_tiny_classifier(tmp_path_factory.mktemp("tiny-rm"))


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared real data lives in ../shared/data beside the repository)")
    return path


def shared_rows(relative: str, limit: int | None = None) -> list[dict]:
    path = shared_file(relative)
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        rows = json.loads(path.read_text())
    return rows[:limit] if limit else rows
