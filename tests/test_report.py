"""make_report and `hf-select report`: the files exist, are valid PNGs, and report.md links them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset

from hf_select.cli import main
from hf_select.errors import HFSelectError
from hf_select.report import make_report
from hf_select.selection import select

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def scored(n: int = 150) -> Dataset:
    rng = np.random.default_rng(0)
    ifd = rng.uniform(0.2, 1.4, n).tolist()
    ifd[3] = float("nan")
    return Dataset.from_dict({
        "instruction": [f"Task {i}: " + "word " * int(rng.integers(1, 40)) for i in range(n)],
        "input": ["" if i % 4 else "some input" for i in range(n)],
        "output": ["answer " * int(rng.integers(1, 80)) for _ in range(n)],
        "category": [["open_qa", "brainstorming", "classification", "summarization"][i % 4] for i in range(n)],
        "ifd": ifd,
        "ifd_status": ["nan_row" if i == 3 else "ok" for i in range(n)],
        "quality": rng.normal(size=n).tolist(),
        "embedding": rng.normal(size=(n, 8)).astype(np.float32).tolist(),
    })


STEPS = [
    {"step": "threshold", "column": "quality", "min": -0.5},
    {"step": "ifd_rule", "top": 0.3},
    {"step": "kcenter", "k": 20},
]


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_SIGNATURE, path


def test_report_files_are_pngs_and_linked(tmp_path):
    ds = scored()
    result = select(ds, STEPS)
    md = make_report(ds, result, tmp_path / "report", title="Test report")
    out = tmp_path / "report"
    assert md == out / "report.md"
    meta = json.loads((out / "report.json").read_text())
    files = [f["file"] for f in meta["figures"]]
    assert set(files) == {"steps.png", "hist_ifd.png", "hist_quality.png", "embedding_map.png", "lengths.png",
                          "composition_category.png"}
    text = md.read_text()
    for f in files:
        assert_png(out / f)
        assert f"]({f})" in text
    assert text.startswith("# Test report") and "| 2 | ifd_rule |" in text and "Selected **20** of **150**" in text
    assert meta["rows_selected"] == 20 and meta["provenance"]["steps"][2]["step"] == "kcenter"
    assert meta["summary"]["scores"]["ifd"]["all"]["nan"] == 1


def test_report_from_a_plain_subset_and_from_saved_folders(tmp_path):
    ds = scored(60)
    result = select(ds, [{"step": "random", "count": 10}])
    make_report(ds, result.dataset, tmp_path / "a", score_columns=["quality"])
    assert "No provenance" in (tmp_path / "a" / "report.md").read_text()
    assert_png(tmp_path / "a" / "hist_quality.png")
    assert not (tmp_path / "a" / "hist_ifd.png").exists()
    ds.save_to_disk(str(tmp_path / "scored"))
    result.save(tmp_path / "chosen")
    code = main(["report", "--dataset", str(tmp_path / "scored"), "--selection", str(tmp_path / "chosen"),
                 "--output", str(tmp_path / "b"), "--score-columns", "ifd"])
    assert code == 0
    meta = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [f["file"] for f in meta["figures"] if f["kind"] == "score_histogram"] == ["hist_ifd.png"]
    for f in meta["figures"]:
        assert_png(tmp_path / "b" / f["file"])


def test_report_without_text_or_embeddings(tmp_path):
    ds = Dataset.from_dict({"score": [0.1, 0.5, 0.9, float("nan")]})
    result = select(ds, [{"step": "top", "column": "score", "count": 2}])
    make_report(ds, result, tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "report.json").read_text())
    assert {f["file"] for f in meta["figures"]} == {"steps.png", "hist_score.png"}
    assert any("embedding" in n for n in meta["notes"]) and any("length" in n for n in meta["notes"])


def test_report_errors_name_the_problem(tmp_path, capsys):
    ds = scored(30)
    result = select(ds, [{"step": "random", "count": 5}])
    with pytest.raises(HFSelectError, match="'reward'"):
        make_report(ds, result, tmp_path / "x", score_columns=["reward"])
    with pytest.raises(HFSelectError, match="has 10 rows"):
        make_report(ds.select(range(10)), select(ds, [{"step": "top", "column": "quality", "count": 3}]),
                    tmp_path / "y")
    with pytest.raises(HFSelectError, match="_row_id"):
        make_report(ds, ds.select([1, 2]), tmp_path / "z")
    code = main(["report", "--dataset", str(tmp_path / "missing"), "--selection", str(tmp_path / "nope"),
                 "--output", str(tmp_path / "o")])
    assert code == 2 and "hf-select: error:" in capsys.readouterr().err


def test_report_shows_example_rows_kept_at_the_top_at_the_cutoff_and_dropped_per_reason(tmp_path):
    ds = scored()
    ds = ds.map(lambda row, i: {"output": "line one | two\n" + row["output"] * 3} if i % 2 else {}, with_indices=True)
    result = select(ds, [{"step": "threshold", "column": "quality", "min": -0.5},
                         {"step": "ifd_rule", "fraction": 0.3}, {"step": "kcenter", "k": 20}])
    md = make_report(ds, result, tmp_path / "r").read_text()
    groups = json.loads((tmp_path / "r" / "report.json").read_text())["summary"]["examples"]
    kept = set(result.row_ids)
    ifd = np.asarray(ds["ifd"])
    ranked = sorted(kept, key=lambda i: -ifd[i])  # the main score: ifd, the last ranking step's column
    top, cutoff, *drops = groups
    assert top["title"] == "Kept: top by `ifd` (highest first)" and [r["row_id"] for r in top["rows"]] == ranked[:3]
    assert [r["row_id"] for r in cutoff["rows"]] == ranked[-3:]
    assert cutoff["rows"][-1]["scores"]["ifd"] == pytest.approx(min(ifd[i] for i in kept))
    assert top["columns"][0] == "ifd" and set(top["rows"][0]["scores"]) == {"ifd", "quality"}
    dropped = result.dropped.with_format(None)
    reasons = [(f"step {i + 1} ({e['step']})", r) for i, e in enumerate(result.provenance) for r in e["dropped"]]
    assert [(g["step"], g["reason"]) for g in drops] == reasons  # every reason, in step order
    for g in drops:
        assert 1 <= len(g["rows"]) <= 2 and g["count"] == result.provenance[int(g["step"].split()[1]) - 1]["dropped"][
            g["reason"]]
        for row in g["rows"]:
            at = dropped["_row_id"].index(row["row_id"])
            assert dropped["drop_reason"][at] == g["reason"] and row["row_id"] not in kept
    texts = [r[k] for g in groups for r in g["rows"] for k in ("instruction", "response")]
    assert all(0 < len(t) <= 200 for t in texts) and any(t.endswith("…") for t in texts)
    assert all("\n" not in t for t in texts)
    section = md[md.index("## Example rows"):md.index("## Notes")]
    for g in groups:
        assert f"### {g['title']}" in section
    assert "line one \\| two" in section and "| ifd | quality | instruction | response |" in section
    assert md.index("## Scores") < md.index("## Example rows")


def test_report_example_rows_without_a_ranking_or_reasons(tmp_path):
    ds = scored(40)
    result = select(ds, [{"step": "random", "count": 10}])
    make_report(ds, result.dataset, tmp_path / "plain", score_columns=["quality"])  # a plain subset: no reasons
    groups = json.loads((tmp_path / "plain" / "report.json").read_text())["summary"]["examples"]
    assert [g["title"] for g in groups] == ["Kept: the first rows (no single score ranks the kept rows)",
                                            "Dropped at no recorded step: not selected (30 rows)"]
    assert [r["row_id"] for r in groups[0]["rows"]] == result.row_ids[:3]
    assert "## Example rows" in (tmp_path / "plain" / "report.md").read_text()
    no_text = Dataset.from_dict({"score": [0.1, 0.5, 0.9, float("nan")]})
    make_report(no_text, select(no_text, [{"step": "top", "column": "score", "count": 2}]), tmp_path / "t")
    groups = json.loads((tmp_path / "t" / "report.json").read_text())["summary"]["examples"]
    assert [r["row_id"] for r in groups[0]["rows"]] == [2, 1] and groups[0]["rows"][0]["instruction"] == ""
    assert [g["group"] for g in groups] == ["top", "dropped", "dropped"]  # 2 kept: all at the top, no cutoff
    assert [(g["reason"], [r["row_id"] for r in g["rows"]]) for g in groups[1:]] == [("nan_score", [3]),
                                                                                      ("not_top", [0])]
