"""``hf-select score``: runs end to end, summarises, and turns file-level problems into one line and exit code 2."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from hf_select.cli import main


@pytest.fixture()
def alpaca_file(tmp_path):
    rows = [{"instruction": f"Add {i} and 1", "input": "", "output": f"{i + 1}"} for i in range(12)]
    rows.append({"instruction": "Say nothing", "input": "", "output": ""})
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    return path


def test_score_ifd_writes_a_dataset_and_prints_a_summary(alpaca_file, tiny_lm_path, tmp_path, capsys):
    out = tmp_path / "scored"
    code = main(
        [
            "score",
            "ifd",
            "--dataset",
            str(alpaca_file),
            "--model",
            str(tiny_lm_path),
            "--output",
            str(out),
            "--template",
            "plain",
            "--shard-size",
            "5",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "ifd_status: ok=12, empty_response=1" in printed
    assert "share>=1=" in printed and "median=" in printed
    ds = load_from_disk(str(out))
    assert len(ds) == 13 and {"ifd", "ifd_ppl", "ifd_status"} <= set(ds.column_names)


@pytest.mark.parametrize("fmt,name", [("jsonl", "data.jsonl"), ("parquet", "data.parquet")])
def test_other_output_formats(alpaca_file, tiny_lm_path, tmp_path, fmt, name):
    out = tmp_path / "scored"
    assert (
        main(
            [
                "score",
                "ifd",
                "--dataset",
                str(alpaca_file),
                "--model",
                str(tiny_lm_path),
                "--output",
                str(out),
                "--format",
                fmt,
            ]
        )
        == 0
    )
    assert (out / name).stat().st_size > 0


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("hf-select: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    return errors[0]


def test_missing_file(tmp_path, capsys):
    assert main(["score", "ifd", "--dataset", str(tmp_path / "nope.json"), "--output", str(tmp_path / "o")]) == 2
    assert "nope.json" in _one_error_line(capsys)


def test_not_a_dataset(tmp_path, capsys):
    bad = tmp_path / "notes.json"
    bad.write_text("this is { not json")
    assert main(["score", "ifd", "--dataset", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "notes.json" in _one_error_line(capsys)


def test_no_known_columns(tmp_path, tiny_lm_path, capsys):
    bad = tmp_path / "cols.json"
    bad.write_text(json.dumps([{"foo": "a", "bar": "b"}]))
    assert (
        main(["score", "ifd", "--dataset", str(bad), "--model", str(tiny_lm_path), "--output", str(tmp_path / "o")])
        == 2
    )
    assert "column_mapping" in _one_error_line(capsys)


def test_never_writes_over_its_input(alpaca_file, capsys):
    assert main(["score", "ifd", "--dataset", str(alpaca_file.parent), "--output", str(alpaca_file.parent)]) == 2
    assert "overwrite" in _one_error_line(capsys)


def test_unknown_set_field(alpaca_file, tmp_path, capsys):
    assert (
        main(["score", "ifd", "--dataset", str(alpaca_file), "--output", str(tmp_path / "o"), "--set", "colour=blue"])
        == 2
    )
    assert "colour" in _one_error_line(capsys)
