"""Every public entry point on the bad-input corpus (tests/data/bad, written by tests/data/make_bad_corpus.py).

A row-level problem gives NaN and a status and the run goes on; a file-level problem gives one
``hf-select: error:`` line and exit code 2 (Python: an error a user can fix), never a traceback. The README's
reliability table lists the same cases; these tests keep the table, the manifest and the behaviour equal.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, load_from_disk

from hf_select.cli import main
from hf_select.errors import HFSelectError, user_error_message
from hf_select.formats import DatasetFormatError
from hf_select.io import load_rows
from hf_select.scoring.ifd import IFD_STATUSES, IFDConfig, IFDScorer

ROOT = Path(__file__).resolve().parents[1]
CORPUS = runpy.run_path(str(ROOT / "tests" / "data" / "make_bad_corpus.py"))
BAD = Path(CORPUS["BAD"])
MANIFEST = json.loads((BAD / "manifest.json").read_text(encoding="utf-8"))
CASES = MANIFEST["cases"]
SCORE_CONFIG = MANIFEST["score_config"]
ROW_CASES = [c for c in CASES if c["kind"] == "row"]
FILE_CASES = [c for c in CASES if c["kind"] == "file"]
LOAD_FAILURES = [c for c in FILE_CASES if c["fails_at"] == "load"]
README_ROWS = CORPUS["read_readme_table"]((ROOT / "README.md").read_text(encoding="utf-8"))
# Statuses a scored row may have: the score is a finite number.
SCORED = {"ok", "truncated", "no_eos"}


def _ids(cases):
    return [c["name"] for c in cases]


def _path(case) -> Path:
    return BAD / case["file"]


@functools.cache
def _loaded(name: str) -> Dataset:
    """``load_rows`` of a row case, read once per session (a Dataset is never changed in place)."""
    return load_rows(_path(next(c for c in CASES if c["name"] == name)))


def one_error_line(stderr: str) -> str:
    """The single ``hf-select: error:`` line of a failed command; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("hf-select: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def check_scored(out, statuses: list[str], status_col: str = "ifd_status", value_cols=("ifd",)) -> None:
    """Statuses as expected, and a value is finite exactly when its row was scored (NaN otherwise, never 0)."""
    assert list(out[status_col]) == statuses
    for col in value_cols:
        for status, value in zip(statuses, out[col], strict=True):
            if value is None or np.ndim(value) > 0:  # embeddings: a finite vector, or null / all NaN
                finite = value is not None and bool(np.isfinite(value).all())
                assert finite == (status in SCORED), (col, status, value)
                assert finite or value is None or bool(np.isnan(value).all())
            else:
                assert math.isfinite(value) == (status in SCORED), (col, status, value)


@pytest.fixture(autouse=True)
def _no_stale_log_handlers():
    """Recipes add a stderr handler to the ``hf_select`` logger; drop it after the test (pytest closes that stream)."""
    log = logging.getLogger("hf_select")
    before = list(log.handlers)
    yield
    log.handlers[:] = before


@pytest.fixture(scope="module")
def ifd(tiny_lm_path):
    return IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), **SCORE_CONFIG))


# -- the corpus, the manifest and the README table agree -------------------------------------------------------------


def test_corpus_is_what_its_generator_writes(capsys):
    assert CORPUS["main"](["--check"]) == 0, capsys.readouterr().out


def test_corpus_covers_every_kind_the_issue_names():
    names = {c["name"] for c in CASES}
    required = {
        "missing_output", "none_output", "number_output", "list_output", "empty_output", "whitespace_output",
        "huge_output", "prompt_too_long", "broken_json_line", "mixed_formats", "unknown_role_sharegpt",
        "ends_with_user_turn", "invalid_utf8", "nul_escaped", "rtl_and_emoji", "duplicate_rows", "empty_file",
        "directory_without_data",
    }
    assert required <= names
    assert len(CASES) >= 30 and len(names) == len(CASES)
    for case in CASES:
        assert _path(case).exists() == (case["name"] != "missing_file"), case["name"]
    assert (BAD / "directory_without_data").is_dir()


def test_readme_table_lists_exactly_the_corpus():
    assert list(README_ROWS) == [c["name"] for c in CASES]
    for case in CASES:
        row = README_ROWS[case["name"]]
        assert row["file"] == case["file"]
        assert row["outcome"] == case["outcome"] == CORPUS["expected_outcome"](case)


def test_readme_tables_are_what_the_generator_writes(tmp_path):
    """The README's reliability tables (corpus and faults) are exactly what ``make_bad_corpus.py --readme`` writes,
    so a fixed bug's row cannot stay "known bug" in the generator while the README says otherwise."""
    copy = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    copy.write_text(text, encoding="utf-8")
    CORPUS["write_readme"](copy)
    assert copy.read_text(encoding="utf-8") == text, "run: python tests/data/make_bad_corpus.py --readme"
    assert "known bug" not in text.split(CORPUS["README_MARKERS"][0], 1)[1] or CORPUS["KNOWN_BUGS"]


def test_readme_faults_table_names_tests_that_exist():
    start, end = CORPUS["README_MARKERS"]
    section = (ROOT / "README.md").read_text(encoding="utf-8").split(start, 1)[1].split(end, 1)[0]
    checked = re.findall(r"\| `tests/(test_reliability_\w+\.py)::(\w+)` \|", section)
    assert len(checked) == len(CORPUS["FAULTS"]) + len(CORPUS["KNOWN_BUGS"])
    for file, name in checked:
        assert f"\ndef {name}(" in (ROOT / "tests" / file).read_text(encoding="utf-8"), (file, name)


def _readme_expectation(case) -> tuple[str, object]:
    return CORPUS["parse_outcome"](README_ROWS[case["name"]]["outcome"])


# -- Python: load_rows, Dataset.map and .score(), select() -----------------------------------------------------------


@pytest.mark.parametrize("case", ROW_CASES, ids=_ids(ROW_CASES))
def test_row_case_in_python(case, ifd):
    from hf_select.selection import select

    statuses = case["statuses"]
    assert set(statuses) <= set(IFD_STATUSES)
    ds = _loaded(case["name"])  # load_rows, once per session
    assert len(ds) == len(statuses)  # no row lost, none invented
    mapped = ds.map(ifd, batched=True, batch_size=3, load_from_cache_file=False)
    check_scored(mapped, statuses, value_cols=("ifd", "ifd_ppl", "loss_conditioned", "loss_direct"))
    assert all((t > 0) == (s == "ok") for s, t in zip(statuses, mapped["response_tokens"], strict=True))
    if case["name"] == "duplicate_rows":
        assert len(set(mapped["ifd"])) == 1
    if case["name"] == "huge_output":
        assert 0 < mapped["response_tokens"][1] < SCORE_CONFIG["max_length"]
    # selection reads the NaN scores: a row that could not be scored is never chosen, and is counted by reason
    result = select(mapped, [{"step": "ifd_rule", "count": max(1, statuses.count("ok")), "max_ifd": math.inf}])
    assert sorted(result.row_ids) == [i for i, s in enumerate(statuses) if s == "ok"]
    dropped = result.dropped_counts()
    for status in set(statuses) - {"ok"}:
        assert dropped[f"ifd_status:{status}"] == statuses.count(status)


def raw_union(cases) -> tuple[Dataset, list[str]]:
    """Every row of ``cases`` in one dataset of JSON text rows (the form the tolerant loader gives mixed files)."""
    texts, statuses = [], []
    for case in cases:
        ds = _loaded(case["name"])
        if "_raw" in ds.column_names:
            texts += list(ds["_raw"])
        else:
            texts += [json.dumps(row, ensure_ascii=False) for row in ds]
        statuses += case["statuses"]
    return Dataset.from_dict({"_raw": texts}), statuses


@pytest.fixture(scope="module")
def scored_union(ifd, tmp_path_factory):
    union, statuses = raw_union(ROW_CASES)
    scored = ifd.score(union, shard_size=7, run_dir=tmp_path_factory.mktemp("union") / "run", progress=False)
    return union, scored, statuses


def test_score_on_every_row_case_at_once(scored_union):
    """``.score()``: sharded, in input order, every bad row NaN with its status, every good row scored."""
    union, scored, statuses = scored_union
    assert list(scored["_raw"]) == list(union["_raw"])
    check_scored(scored, statuses, value_cols=("ifd", "ifd_ppl", "loss_conditioned", "loss_direct"))


@pytest.mark.parametrize("case", FILE_CASES, ids=_ids(FILE_CASES))
def test_file_case_in_python(case, ifd):
    try:
        ds = load_rows(_path(case))
    except HFSelectError as err:
        assert case["fails_at"] == "load"
        error: BaseException = err
    else:
        assert case["fails_at"] == "format"
        with pytest.raises(DatasetFormatError) as info:
            ds.map(ifd, batched=True, load_from_cache_file=False)
        error = info.value
    message = user_error_message(error)
    assert message is not None and "\n" not in message
    assert case["error"] in message


# -- the command line -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_cli_score(case, tiny_lm_path, tmp_path, capsys):
    out = tmp_path / "scored"
    args = ["score", "ifd", "--dataset", str(_path(case)), "--model", str(tiny_lm_path), "--output", str(out),
            "--template", SCORE_CONFIG["template"], "--max-length", str(SCORE_CONFIG["max_length"]),
            "--shard-size", "2"]
    code = main(args)
    captured = capsys.readouterr()
    kind, expected = _readme_expectation(case)  # what the README table promises
    if kind == "row":
        assert code == 0, captured.err
        statuses = list(load_from_disk(str(out))["ifd_status"])
        assert statuses == expected == case["statuses"]
        for status in set(statuses):
            assert f"{status}={statuses.count(status)}" in captured.out  # the summary counts every reason
    else:
        assert code == 2 and not out.exists()
        line = one_error_line(captured.err)
        assert expected == case["error"] and expected in line
        if case["fails_at"] == "load":
            assert case["file"] in line  # the line names what it could not use


@pytest.mark.parametrize("command", ["select", "report"])
@pytest.mark.parametrize("case", LOAD_FAILURES, ids=_ids(LOAD_FAILURES))
def test_cli_select_and_report_refuse_unreadable_inputs(case, command, tmp_path, capsys):
    if command == "select":
        args = ["select", "--dataset", str(_path(case)), "--step", "{step: random, count: 1}"]
    else:
        args = ["report", "--dataset", str(_path(case)), "--selection", str(_path(case))]
    assert main([*args, "--output", str(tmp_path / "out")]) == 2
    assert case["error"] in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_cli_select_and_report_on_scores_with_nan(scored_union, tmp_path, capsys):
    """Every row case's scored rows together: NaN scores are never selected, and the report draws what is finite."""
    _, scored, statuses = scored_union
    scored.save_to_disk(str(tmp_path / "scored"))
    assert main(["select", "--dataset", str(tmp_path / "scored"), "--output", str(tmp_path / "chosen"),
                 "--step", "{step: threshold, column: ifd, min: 0.0}"]) == 0
    chosen = load_from_disk(str(tmp_path / "chosen"))
    assert sorted(chosen["_row_id"]) == [i for i, s in enumerate(statuses) if s == "ok"]
    provenance = json.loads((tmp_path / "chosen" / "provenance.json").read_text())
    assert provenance["steps"][0]["dropped"] == {"nan_score": sum(s != "ok" for s in statuses)}
    assert main(["report", "--dataset", str(tmp_path / "scored"), "--selection", str(tmp_path / "chosen"),
                 "--output", str(tmp_path / "report"), "--score-columns", "ifd"]) == 0, capsys.readouterr().err
    assert (tmp_path / "report" / "report.md").is_file()


# -- the other scorers ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_scorers(tiny_lm_path, tiny_classifier_path):
    from hf_select.scoring.embed import EmbedConfig, Embedder
    from hf_select.scoring.indicators import IndicatorConfig, IndicatorScorer
    from hf_select.scoring.necessity import NecessityConfig, NecessityScorer
    from hf_select.scoring.quality import QualityConfig, QualityScorer

    lm, length = str(tiny_lm_path), SCORE_CONFIG["max_length"]
    reward = {"backend": "reward", "model_name_or_path": str(tiny_classifier_path), "max_length": length}
    return {
        "quality": (QualityScorer(QualityConfig(**reward)), "quality_status", ("quality",)),
        "embed": (Embedder(EmbedConfig(model_name_or_path=lm, backend="causal_lm", max_length=length)),
                  "embedding_status", ("embedding",)),
        "indicators": (IndicatorScorer(IndicatorConfig(model_name_or_path=lm, max_length=length,
                                                       template=SCORE_CONFIG["template"])),
                       "ind_status", ("ind_ppl",)),
        "necessity": (NecessityScorer(NecessityConfig(model_name_or_path=lm, quality=reward, max_new_tokens=3,
                                                      max_prompt_length=length, template=SCORE_CONFIG["template"])),
                      "necessity_status", ("necessity",)),
    }


@pytest.mark.parametrize("case", ROW_CASES, ids=_ids(ROW_CASES))
def test_row_case_other_scorers(case, other_scorers):
    batch = _loaded(case["name"])[:]
    for name, (scorer, status_col, value_cols) in other_scorers.items():
        if name == "necessity":
            continue  # generation is slow: test_necessity_on_every_row_case_at_once
        out = scorer(batch)
        assert list(out[status_col]) == case["other_statuses"].get(name, case["statuses"]), name
        check_scored(out, list(out[status_col]), status_col, value_cols)


def test_necessity_on_every_row_case_at_once(other_scorers):
    scorer, status_col, value_cols = other_scorers["necessity"]
    union, _ = raw_union(ROW_CASES)
    expected = [s for c in ROW_CASES for s in c["other_statuses"].get("necessity", c["statuses"])]
    out = scorer(union[:])
    # the tiny random model rarely stops by itself: answers capped at max_new_tokens are still scored (no_eos)
    assert ["ok" if s == "no_eos" else s for s in out[status_col]] == expected
    check_scored(out, list(out[status_col]), status_col, value_cols)


@pytest.mark.parametrize("case", [c for c in FILE_CASES if c["fails_at"] == "format"],
                         ids=_ids([c for c in FILE_CASES if c["fails_at"] == "format"]))
def test_other_scorers_refuse_unknown_formats(case, other_scorers):
    batch = load_rows(_path(case))[:]
    for name, (scorer, _, _) in other_scorers.items():
        with pytest.raises(DatasetFormatError, match="column_mapping"):
            scorer(batch)
        assert name


# -- the recipes ------------------------------------------------------------------------------------------------------

RECIPES = ["superfilter", "cherry", "mods", "instruct_mining"]


def _recipe_path(name: str) -> Path:
    path = ROOT / "recipes" / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"recipes/{name}.py does not exist yet")
    return path


@pytest.mark.parametrize("case_name", ["empty_file", "directory_without_data", "no_known_columns"])
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_script_on_unusable_input(recipe, case_name, tiny_lm_path, tmp_path, monkeypatch, capsys):
    """``python recipes/X.py --dataset BAD ...`` prints one error line and exits with code 2."""
    case = next(c for c in CASES if c["name"] == case_name)
    path = _recipe_path(recipe)
    good = tmp_path / "eval.jsonl"
    good.write_text(json.dumps({"instruction": "Say hi", "input": "", "output": "hi"}) + "\n")
    argv = [str(path), "--dataset", str(_path(case)), "--output_dir", str(tmp_path / "run"),
            "--model_name_or_path", str(tiny_lm_path), "--max_steps", "1", "--eval_dataset", str(good)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(path), run_name="__main__")
    assert info.value.code == 2
    assert case["error"] in one_error_line(capsys.readouterr().err)


def _messy_union(tmp_path: Path) -> tuple[Path, list[str]]:
    """All JSON Lines row cases in one file (a byte-order mark only counts at the start, so those two stay out)."""
    chunks, statuses = [], []
    for case in ROW_CASES:
        if not case["file"].endswith(".jsonl") or "bom" in case["name"]:
            continue
        data = _path(case).read_bytes()
        chunks.append(data if data.endswith(b"\n") else data + b"\n")
        statuses += case["statuses"]
    path = tmp_path / "messy.jsonl"
    path.write_bytes(b"".join(chunks))
    return path, statuses


def test_superfilter_recipe_on_every_row_case(tiny_lm_path, tmp_path):
    """The recipe runs to the end over all the bad rows at once; no row that could not be scored is selected."""
    from importlib import import_module

    _recipe_path("superfilter")
    data, statuses = _messy_union(tmp_path)
    recipe = import_module("hf_select.recipes.superfilter")
    args = recipe.SuperfilterArguments(
        dataset=str(data), output_dir=str(tmp_path / "run"), ifd_model_name_or_path=str(tiny_lm_path),
        model_name_or_path=str(tiny_lm_path), template=SCORE_CONFIG["template"], ifd_layout="hf_select",
        score_max_length=SCORE_CONFIG["max_length"], max_length=128, ifd_fraction=0.5, max_steps=1,
        per_device_train_batch_size=2, report=False, shard_size=16,
    )
    summary = recipe.run_superfilter(args)
    assert summary["rows_in"] == len(statuses)
    scored = load_from_disk(str(tmp_path / "run" / "ifd" / "data"))
    assert list(scored["ifd_status"]) == statuses
    chosen = load_from_disk(str(tmp_path / "run" / "selection" / "selection"))
    assert 0 < len(chosen) == summary["rows_out"]
    assert all(statuses[i] == "ok" for i in chosen["_row_id"])


# -- rows longer than the model can take ------------------------------------------------------------------------------

POSITIONS = 64  # a GPT-2-style model with learned positions: a longer sequence cannot even be run


@pytest.fixture(scope="module")
def short_models(tmp_path_factory):
    """A tiny GPT-2 LM and reward model with 64 positions (Superfiltering scores IFD with GPT-2)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    from hf_select.testing import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    paths = {}
    for name, cls, extra in (("lm", GPT2LMHeadModel, {}), ("rm", GPT2ForSequenceClassification, {"num_labels": 1})):
        config = GPT2Config(vocab_size=len(tok), n_positions=POSITIONS, n_embd=32, n_layer=1, n_head=2,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id, **extra)
        torch_seed = __import__("torch").manual_seed(0)
        assert torch_seed is not None
        paths[name] = tmp_path_factory.mktemp(f"gpt2-{name}")
        cls(config).save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
    return paths


@pytest.mark.parametrize("name", ["prompt_too_long", "huge_output"])
def test_cli_score_with_rows_longer_than_the_model_limit(name, short_models, tmp_path, capsys):
    """The default max_length (1024) is above the model's 64 positions: rows are cut to what the model takes."""
    case = next(c for c in CASES if c["name"] == name)
    out = tmp_path / "scored"
    assert main(["score", "ifd", "--dataset", str(_path(case)), "--model", str(short_models["lm"]), "--output",
                 str(out), "--template", "plain"]) == 0, capsys.readouterr().err
    scored = load_from_disk(str(out))
    assert list(scored["ifd_status"]) == case["statuses"]
    assert all(0 <= t <= POSITIONS for t in scored["response_tokens"])


@pytest.mark.parametrize("scorer_name", [
    "quality",
    "embed",
    "indicators",
    "necessity",
])
def test_other_scorers_with_rows_longer_than_the_model_limit(scorer_name, short_models):
    from hf_select.scoring.embed import EmbedConfig, Embedder
    from hf_select.scoring.indicators import IndicatorConfig, IndicatorScorer
    from hf_select.scoring.necessity import NecessityConfig, NecessityScorer
    from hf_select.scoring.quality import QualityConfig, QualityScorer

    lm, reward = str(short_models["lm"]), {"backend": "reward", "model_name_or_path": str(short_models["rm"])}
    scorer, status_col = {
        "quality": lambda: (QualityScorer(QualityConfig(**reward)), "quality_status"),
        "embed": lambda: (Embedder(EmbedConfig(model_name_or_path=lm, backend="causal_lm")), "embedding_status"),
        "indicators": lambda: (IndicatorScorer(IndicatorConfig(model_name_or_path=lm, template="plain")),
                               "ind_status"),
        "necessity": lambda: (NecessityScorer(NecessityConfig(model_name_or_path=lm, template="plain",
                                                              max_new_tokens=8, quality=reward)), "necessity_status"),
    }[scorer_name]()
    # a prompt a few times the model's limit (but under every default max_length), then the corpus' long rows
    batch = {"instruction": ["word " * 150], "input": [""], "output": ["x"]}
    for name in ("prompt_too_long", "huge_output"):
        rows = _loaded(name)[:]
        for key in ("instruction", "input", "output"):
            batch[key].extend(rows[key])
    out = scorer(batch)  # a row the model cannot take gets a status; the others are scored
    assert len(out[status_col]) == 5 and set(out[status_col]) <= {"ok", "truncated", "no_eos", "prompt_too_long"}
