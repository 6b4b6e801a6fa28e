"""target_similarity (RDS+): max / mean / round-robin against loop-based brute forces; target files; bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from datasets import Dataset

from hf_select.errors import HFSelectError
from hf_select.selection import TargetEmbeddings, load_target_embeddings, select, target_similarity
from hf_select.selection.target import round_robin

NAN = float("nan")


def pool(n: int = 40, d: int = 5, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).round(2).tolist()
    emb[3] = None  # a row without a vector
    targets = rng.normal(size=(4, d))
    return Dataset.from_dict({"embedding": emb, "id": list(range(n))}), targets


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def brute(ds, targets, count, aggregate):
    emb = ds["embedding"]
    rows = [i for i, e in enumerate(emb) if e is not None]
    sims = {i: [cosine(emb[i], t) for t in targets] for i in rows}
    if aggregate == "round_robin":
        chosen: list[int] = []
        j = 0
        while len(chosen) < min(count, len(rows)):
            best = max((i for i in rows if i not in chosen), key=lambda i: (sims[i][j], -i))
            chosen.append(best)
            j = (j + 1) % len(targets)
        return sorted(chosen)
    agg = {i: (max(s) if aggregate == "max" else sum(s) / len(s)) for i, s in sims.items()}
    return sorted(sorted(rows, key=lambda i: (-agg[i], i))[:count])


@pytest.mark.parametrize("aggregate", ["max", "mean", "round_robin"])
@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed, aggregate):
    ds, targets = pool(seed=seed)
    count = int(np.random.default_rng(seed).integers(1, 30))
    res = select(ds, [{"step": "target_similarity", "target": TargetEmbeddings(targets, "t"), "count": count,
                       "aggregate": aggregate}])
    assert res.row_ids == brute(ds, targets.tolist(), count, aggregate)
    assert res.provenance[0]["dropped"]["no_embedding"] == 1
    assert res.provenance[0]["params"]["target"] == "t (4 target rows)"


def test_round_robin_gives_every_target_its_turn():
    sims = np.array([[0.9, 0.9], [0.8, 0.1], [0.7, 0.2], [0.1, 0.3]])
    assert round_robin(sims, 2).tolist() == [0, 3]  # target 1's best (row 0) is taken: it gets row 3
    assert round_robin(sims, 4).tolist() == [0, 3, 1, 2]


def test_target_files(tmp_path):
    ds, targets = pool(seed=1)
    want = brute(ds, targets.tolist(), 5, "max")
    npy = tmp_path / "t.npy"
    np.save(npy, targets)
    jsonl = tmp_path / "t.jsonl"
    with jsonl.open("w") as f:
        for t in targets:
            f.write(json.dumps({"instruction": "x", "embedding": t.tolist()}) + "\n")
        f.write(json.dumps({"instruction": "y", "embedding": None}) + "\n")
    disk = tmp_path / "t_disk"
    Dataset.from_dict({"embedding": targets.tolist()}).save_to_disk(str(disk))
    for path in (npy, jsonl, disk):
        res = select(ds, [{"step": "target_similarity", "target": str(path), "count": 5}])
        assert res.row_ids == want, path
    assert load_target_embeddings(str(jsonl)).rows_skipped == 1


def test_bad_target_input(tmp_path):
    ds, targets = pool()
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"instruction": "x", "embedding": None}) + "\n")
    with pytest.raises(HFSelectError, match=r"step 1 \(target_similarity\).*no usable row in field 'embedding'"):
        select(ds, [{"step": "target_similarity", "target": str(empty), "count": 2}])
    with pytest.raises(HFSelectError, match="no usable row"):
        target_similarity(ds, target=np.full((2, 5), np.nan), count=2)
    with pytest.raises(HFSelectError, match="no usable row"):
        target_similarity(ds, target=np.zeros((0, 5)), count=2)
    with pytest.raises(HFSelectError, match="5 dimensions but the target's have 3"):
        target_similarity(ds, target=np.ones((2, 3)), count=2)
    with pytest.raises(HFSelectError, match="no target given"):
        select(ds, [{"step": "target_similarity", "count": 2}])
    with pytest.raises(HFSelectError, match="no such file"):
        select(ds, [{"step": "target_similarity", "target": str(tmp_path / "missing.npy"), "count": 2}])
    with pytest.raises(HFSelectError, match="aggregate must be one of"):
        target_similarity(ds, target=targets, count=2, aggregate="median")
    no_col = tmp_path / "nocol.jsonl"
    no_col.write_text(json.dumps({"instruction": "x"}) + "\n")
    with pytest.raises(HFSelectError, match="no column 'embedding'"):
        target_similarity(ds, target=str(no_col), count=2)


def test_stratified_target_similarity():
    ds, targets = pool(n=60, seed=2)
    ds = ds.add_column("source", ["a" if i % 3 else "b" for i in range(60)])
    res = select(ds, [{"step": "target_similarity", "target": TargetEmbeddings(targets), "count": 12,
                       "stratify_by": "source"}])
    assert len(res) == 12
    assert res.dataset["source"].count("b") == 4  # 20 of 60 rows


def test_cli_target_flag_with_embedded_target_file(tmp_path, capsys):
    from hf_select.cli import main

    ds, targets = pool(seed=3)
    data = tmp_path / "pool"
    ds.save_to_disk(str(data))
    tfile = tmp_path / "targets.jsonl"
    with tfile.open("w") as f:
        for t in targets:
            f.write(json.dumps({"instruction": "x", "output": "y", "embedding": t.tolist()}) + "\n")
    out = tmp_path / "chosen"
    code = main(["select", "--dataset", str(data), "--output", str(out), "--target", str(tfile),
                 "--step", "{step: target_similarity, count: 6, aggregate: mean}"])
    assert code == 0
    from hf_select.selection import SelectionResult

    res = SelectionResult.load(out)
    assert res.row_ids == brute(ds, targets.tolist(), 6, "mean")
    assert "4 target rows" in json.dumps(res.to_dict()["steps"][0]["params"]["target"])
    # no step uses the target: one clear error line
    code = main(["select", "--dataset", str(data), "--output", str(tmp_path / "x"), "--target", str(tfile),
                 "--step", "{step: random, count: 3}"])
    assert code == 2
    assert "no step uses it" in capsys.readouterr().err


def test_cli_target_flag_embeds_rows(tmp_path, tiny_lm_path):
    from hf_select.cli import main
    from hf_select.scoring.embed import EmbedConfig, Embedder

    rows = [{"instruction": f"Question number {i} about {w}?", "input": "", "output": f"Answer {i}."}
            for i, w in enumerate(["cats", "dogs", "code", "math", "rivers", "songs"] * 3)]
    embedder = Embedder(EmbedConfig(model_name_or_path=str(tiny_lm_path), text="instruction", device="cpu"))
    pool_ds = embedder.score(Dataset.from_list(rows))
    data = tmp_path / "pool"
    pool_ds.save_to_disk(str(data))
    tfile = tmp_path / "targets.jsonl"
    tfile.write_text("\n".join(json.dumps({"instruction": t, "output": "ok"}) for t in
                               ["Question number 2 about code?", "Question number 3 about math?"]) + "\n")
    out = tmp_path / "chosen"
    assert main(["select", "--dataset", str(data), "--output", str(out), "--target", str(tfile),
                 "--target-embedder", str(tiny_lm_path),
                 "--step", "{step: target_similarity, count: 2, aggregate: round_robin}"]) == 0
    from hf_select.selection import SelectionResult

    res = SelectionResult.load(out)
    assert len(res) == 2
    x = np.asarray(pool_ds["embedding"])
    t = np.asarray(embedder.score(Dataset.from_list([{"instruction": q, "output": "ok"} for q in
                                                     ["Question number 2 about code?",
                                                      "Question number 3 about math?"]]))["embedding"])
    assert res.row_ids == brute(pool_ds, t.tolist(), 2, "round_robin")
    assert x.shape[1] == t.shape[1]
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"instruction": "", "output": ""}) + "\n")
    assert main(["select", "--dataset", str(data), "--output", str(tmp_path / "y"), "--target", str(empty),
                 "--target-embedder", str(tiny_lm_path), "--step", "{step: target_similarity, count: 2}"]) == 2
