"""``hf-select ... --help``: every command's and every recipe script's ``--help`` runs (a ``%`` in a help text is
text, not a format) and a recipe's names its shipped configs, every option shows its default, ``--set`` lists what it
accepts, the parsers' snapshot of the registries is fresh, ``--column-mapping`` reaches the scorer and the steps,
``demo --help`` shows its sizes. (That building the parser and printing help loads no torch is in
tests/test_imports.py.)"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import runpy
import sys
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk

from hf_select.cli import COMMANDS, build_parser, main
from hf_select.commands import catalog
from hf_select.commands.demo import DemoConfig
from hf_select.formats import DatasetFormatError, detect_format
from hf_select.recipes import RECIPES, shipped_configs
from hf_select.scoring.ifd import IFDConfig
from hf_select.scoring.registry import SCORERS

RECIPE_SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.py"))


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_parsers_snapshot_of_the_registries_is_fresh():
    path = catalog.__file__.replace("catalog.py", "catalog_data.py")
    with open(path, encoding="utf-8") as f:
        assert f.read() == catalog.render(), (
            f"hf_select/commands/catalog_data.py is stale (a scorer config, preset or compare method changed); "
            f"regenerate it with: {catalog.REGENERATE}")
    assert sorted(catalog.SCORER_FIELDS) == sorted(SCORERS)
    assert catalog.scorer_field_names("ifd") == [f.name for f in dataclasses.fields(IFDConfig)]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_every_commands_help_runs(command, capsys):
    argv = [command, "--help"] if command else ["--help"]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 0, f"hf-select {' '.join(argv)} exited with {stop.value.code}"
    assert capsys.readouterr().out.startswith(f"usage: hf-select {command}".rstrip())


def test_every_recipe_has_a_script():
    assert sorted(p.stem for p in RECIPE_SCRIPTS) == sorted(RECIPES)


@pytest.mark.parametrize("script", RECIPE_SCRIPTS, ids=lambda p: p.stem)
def test_every_recipe_scripts_help_runs_and_names_its_configs(script, capsys, monkeypatch):
    log = logging.getLogger("hf_select")  # the script sets up its logging: leave the logger as it was
    monkeypatch.setattr(log, "handlers", list(log.handlers))
    monkeypatch.setattr(log, "level", log.level)
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(script), run_name="__main__")
    captured = capsys.readouterr()
    assert stop.value.code == 0, f"python recipes/{script.name} --help failed: {captured.err.strip()[-300:]}"
    out = " ".join(captured.out.split())
    configs = shipped_configs(script.stem)
    assert configs == sorted(p.stem for p in (script.parent / "configs").glob(f"{script.stem}_*.yaml")) != []
    for name in configs:
        assert f"{name} recipes/configs/{name}.yaml" in out
    assert "top 10% from 58%" in out or script.stem not in ("superfilter", "cherry")  # the text the % broke


def test_every_option_shows_its_default():
    missing = []
    for name, sub in [("hf-select", build_parser()), *_subparsers().items()]:
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if action.required:
                continue
            text = formatter._expand_help(action)
            if "default" not in text and "required" not in text:  # "required" for options needed but for --list-*
                missing.append(f"{name} {action.option_strings[0]}")
    assert not missing, f"options whose help does not say their default: {missing}"


def test_config_defaults_appear_in_score_help(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"ifd {IFDConfig().max_length}" in out and "embed 512" in out  # --max-length: each config's default
    for scorer in SCORERS:
        assert f"{scorer}: {', '.join(catalog.scorer_field_names(scorer))}" in out  # --set: the fields per scorer


def test_set_help_prints_the_scorers_fields(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["score", "ifd", "--set", "help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("ifd (IFDConfig)") and "quality (" not in out
    assert "max_length (int; default 1024)" in out and "reverse (bool; default False)" in out
    with pytest.raises(SystemExit):
        main(["score", "--set", "help", "ifd"])  # before the scorer: every scorer
    assert "embed (EmbedConfig)" in capsys.readouterr().out


def test_demo_help_shows_the_sizes(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    c = DemoConfig()
    for text in (f"IFD of {c.rows} demo rows", f"MoDS: {c.mods_rows} rows", f"{c.seed_count} k-center seed rows",
                 f"{c.necessity_count} necessary rows", f"{c.eval_rows} clean demo rows", f"{c.max_length} tokens"):
        assert text in out


def test_column_mapping_option_parses_and_rejects_bad_forms(capsys):
    parse = build_parser().parse_args
    args = parse(["select", "--column-mapping", "prompt_text=instruction", "--column-mapping", "reply=output"])
    assert args.column_mapping == {"prompt_text": "instruction", "reply": "output"}
    assert parse(["report", "--dataset", "a", "--selection", "b", "--output", "c"]).column_mapping is None
    for bad, says in (("reply", "YOUR_COLUMN=FIELD"), ("reply=answer", "is not a row field")):
        with pytest.raises(SystemExit):
            parse(["score", "ifd", "--dataset", "a", "--output", "b", "--column-mapping", bad])
        assert says in capsys.readouterr().err


def test_the_wrong_columns_error_shows_the_command_line_form():
    with pytest.raises(DatasetFormatError, match="--column-mapping your_col=instruction"):
        detect_format(["q", "a"])


def test_column_mapping_reaches_the_steps_and_the_report(tmp_path):
    path = tmp_path / "rows"
    Dataset.from_dict({"prompt_text": ["a", "b", "c"], "reply": ["x", "yyyy", "zz"]}).save_to_disk(str(path))
    out = tmp_path / "chosen"
    assert main(["select", "--dataset", str(path), "--output", str(out), "--step", "{step: longest, count: 1}",
                 "--column-mapping", "prompt_text=instruction", "--column-mapping", "reply=output"]) == 0
    assert load_from_disk(str(out))["reply"] == ["yyyy"]
    assert main(["select", "--dataset", str(path), "--output", str(tmp_path / "no"),
                 "--step", "{step: longest, count: 1}"]) == 2  # without the mapping the rows cannot be read
    report = tmp_path / "report"
    assert main(["report", "--dataset", str(path), "--selection", str(out), "--output", str(report),
                 "--column-mapping", "prompt_text=instruction", "--column-mapping", "reply=output"]) == 0
    assert (report / "lengths.png").is_file()


def test_column_mapping_reaches_the_scorer(tiny_lm_path, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt_text": "Say hi.", "reply": "Hi there, friend."}\n'
                    '{"prompt_text": "Count to three.", "reply": "One, two, three."}\n')
    out = tmp_path / "scored"
    assert main(["score", "ifd", "--dataset", str(data), "--output", str(out), "--model", str(tiny_lm_path),
                 "--template", "plain", "--max-length", "64", "--column-mapping", "prompt_text=instruction",
                 "--column-mapping", "reply=output"]) == 0
    assert load_from_disk(str(out))["ifd_status"] == ["ok", "ok"]
    assert main(["score", "ifd", "--dataset", str(data), "--output", str(tmp_path / "no"), "--model",
                 str(tiny_lm_path), "--template", "plain"]) == 2
    assert "--column-mapping" in capsys.readouterr().err
