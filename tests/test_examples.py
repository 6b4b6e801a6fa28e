"""Every ``examples/*.yaml`` runs through ``hf-select select`` on a synthetic scored dataset with the columns it
reads, and keeps the number of rows its comments promise (computed here from the columns, not from a run)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from datasets import Dataset, load_from_disk

from hf_select.cli import main
from hf_select.scoring.rule import InstructMiningRule

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
N = 1000
SOURCES = ("alpaca", "dolly", "code")


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    """N rows with every score the examples read: IFD (forward, perplexity ratio, reverse) with statuses, the
    prompt loss, quality, necessity, InstructMining indicators and their rule, an embedding and a source."""
    rng = np.random.default_rng(0)
    ifd = rng.uniform(0.3, 1.3, N)
    ifd_status = np.where(rng.random(N) < 0.05, "prompt_too_long", "ok")
    ifd[ifd_status != "ok"] = np.nan
    reverse = rng.uniform(0.2, 1.2, N)
    reverse_status = np.where(rng.random(N) < 0.1, "prompt_too_long", "ok")
    reverse[reverse_status != "ok"] = np.nan
    lengths = rng.integers(1, 400, N)
    ds = Dataset.from_dict({
        "instruction": [f"Question {i}?" for i in range(N)],
        "input": [""] * N,
        "output": ["word " * int(k) for k in lengths],
        "source": [SOURCES[i] for i in rng.choice(3, N, p=[0.6, 0.3, 0.1])],
        "ifd": ifd, "ifd_ppl": ifd * rng.uniform(0.9, 1.1, N), "ifd_status": ifd_status.tolist(),
        "response_tokens": lengths.tolist(),
        "ifd_reverse": reverse, "ifd_reverse_status": reverse_status.tolist(),
        "loss_reverse_direct": rng.uniform(1.0, 6.0, N),
        "quality": rng.normal(0.5, 1.0, N), "necessity": rng.normal(0.0, 1.0, N),
        "ind_reward": rng.normal(0.0, 1.0, N), "ind_response_len": lengths.astype(float).tolist(),
        "ind_knn6": rng.uniform(0.2, 1.0, N),
        "embedding": rng.normal(size=(N, 8)).astype(np.float32).tolist(),
    })
    ds = InstructMiningRule.preset("instructmining").apply(ds)
    path = tmp_path_factory.mktemp("examples") / "scored"
    ds.save_to_disk(str(path))
    return path


def _expected(name: str, ds: Dataset) -> int | None:
    """Rows each example keeps, from its comments' promise and the columns (None: a range, checked apart)."""
    ifd, ok = np.asarray(ds["ifd"], float), np.asarray(ds["ifd_status"]) == "ok"
    if name == "superfiltering":
        return math.floor(0.1 * N)
    if name == "superfiltering_diverse":
        return math.floor(0.5 * math.floor(0.2 * N))
    if name == "cherry":
        return math.floor(0.1 * int((ok & (ifd < 1)).sum()))
    if name == "mods":
        return 200
    if name == "mods_necessity":
        return 100
    if name in ("instructmining", "longest_gated", "quota"):
        return 200
    if name == "target_aware":
        return math.floor(0.1 * N)
    return None


def _run(config: Path, scored: Path, out: Path, *extra: str) -> Dataset:
    assert main(["select", "--config", str(config), "--dataset", str(scored), "--output", str(out), *extra]) == 0
    return load_from_disk(str(out))


def test_every_example_is_covered():
    names = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))
    assert len(names) >= 7
    missing = [n for n in names if _expected(n, Dataset.from_dict({"ifd": [], "ifd_status": []})) is None
               and n != "cherry_pre_experienced"]
    assert not missing, f"examples without an expected row count in tests/test_examples.py: {missing}"
    for path in EXAMPLES.glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("#"), f"{path.name}: start with a comment saying what it selects and what it reads"
        assert isinstance(yaml.safe_load(text)["steps"], list)


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.yaml") if p.stem != "target_aware"))
def test_example_keeps_the_promised_rows(name, scored, tmp_path):
    ds = load_from_disk(str(scored))
    chosen = _run(EXAMPLES / f"{name}.yaml", scored, tmp_path / name)
    provenance = json.loads((tmp_path / name / "provenance.json").read_text())
    steps = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())["steps"]
    assert [s["step"] for s in provenance["steps"]] == [s["step"] for s in steps]
    expected = _expected(name, ds)
    if expected is not None:
        assert len(chosen) == expected
    else:  # kmeans_sample: at most per_cluster rows from each of n_clusters clusters, all inside the band
        assert 0 < len(chosen) <= 100 * 10
        assert all(np.isfinite(chosen["loss_reverse_direct"]))
    if name in ("superfiltering", "superfiltering_diverse", "cherry", "quota"):  # the IFD rule held
        column = "ifd_ppl" if name.startswith("superfiltering") else "ifd"
        assert max(chosen[column]) < 1.0 and set(chosen["ifd_status"]) == {"ok"}
    if name == "longest_gated":  # the preset, spelled out, chooses what the preset chooses
        preset = tmp_path / "preset"
        assert main(["select", "--dataset", str(scored), "--output", str(preset), "--preset", "longest_gated",
                     "--count", "200"]) == 0
        assert load_from_disk(str(preset))["_row_id"] == chosen["_row_id"]
    if name == "quota":  # every source keeps its share of the rows the threshold passed (largest remainder: +-1)
        passed = np.asarray(ds["source"])[np.isfinite(ds["ifd"]) & (np.asarray(ds["ifd"], float) < 1.0)]
        for source in SOURCES:
            share = float(np.mean(passed == source))
            assert abs(sum(s == source for s in chosen["source"]) - 200 * share) <= 1
    if name == "instructmining":
        pred = np.asarray(ds["instructmining_pred"], float)
        assert max(chosen["instructmining_pred"]) <= np.sort(pred)[199]


def test_target_aware_example_with_a_target_file(scored, tmp_path):
    rng = np.random.default_rng(1)
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"instruction": f"t{i}", "output": "x",
                                          "embedding": rng.normal(size=8).tolist()}) + "\n" for i in range(5)))
    chosen = _run(EXAMPLES / "target_aware.yaml", scored, tmp_path / "target_out", "--target", str(target))
    assert len(chosen) == _expected("target_aware", load_from_disk(str(scored)))
