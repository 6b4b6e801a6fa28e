"""The selection step reference: built from the registry, every parameter documented once, docs/STEPS.md fresh,
and ``hf-select select --list-steps`` prints it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from hf_select.cli import main
from hf_select.selection.step_help import PARAM_HELP
from hf_select.selection.steps import STEPS, docstring_params, register_step
from hf_select.step_reference import REGENERATE, describe_step, describe_steps, reference_markdown, reference_text

DOCS = Path(__file__).resolve().parent.parent / "docs" / "STEPS.md"


def test_every_parameter_of_every_step_has_a_meaning():
    undocumented = {name: [p for p in spec.params if not spec.param_help.get(p, "").strip()]
                    for name, spec in STEPS.items()}
    undocumented = {k: v for k, v in undocumented.items() if v}
    assert not undocumented, ("parameters without a meaning (add them to the function's docstring Args: section, "
                              f"or to hf_select/selection/step_help.py): {undocumented}")
    for doc in describe_steps():
        assert doc.summary, f"{doc.name}: its function has no docstring"
        assert all(p.meaning for p in doc.params), doc.name


def test_param_help_names_only_real_parameters_and_never_one_the_docstring_has():
    for name, meanings in PARAM_HELP.items():
        assert name in STEPS, f"step_help.PARAM_HELP names a step that is not registered: {name}"
        function = STEPS[name].function
        assert set(meanings) <= set(STEPS[name].params), f"{name}: {sorted(set(meanings) - set(STEPS[name].params))}"
        assert not set(meanings) & set(docstring_params(inspect.getdoc(function))), name


def test_docs_steps_md_is_up_to_date():
    assert DOCS.is_file(), f"docs/STEPS.md is missing; write it with: {REGENERATE}"
    assert DOCS.read_text(encoding="utf-8") == reference_markdown(), (
        f"docs/STEPS.md is stale (the step registry changed); regenerate it with: {REGENERATE}")


def test_reference_has_types_defaults_and_the_select_level_keys():
    top = {p.name: p for p in describe_step("top").params}
    assert top["column"].required and top["column"].type == "str"
    assert top["descending"].default == "True" and top["of"].default == "'all'"
    assert "stratify_by" in top and "min_share" in top and "seed" not in top
    threshold = {p.name for p in describe_step("threshold").params}
    assert "stratify_by" in threshold and "min_share" not in threshold
    kcenter = {p.name for p in describe_step("kcenter").params}
    assert {"k", "seed", "stratify_by"} <= kcenter
    assert describe_step("facility_location").renamed == (("k", "count"),)
    assert describe_step("ifd_rule").reasons == ("ifd_status:<status>", "nan_score", "ifd_ge_1", "not_top")
    markdown = reference_markdown()
    for name in STEPS:
        assert f"\n## {name}\n" in markdown
    with pytest.raises(KeyError, match="registered steps"):
        describe_step("no_such_step")


def test_a_registered_step_documents_itself(monkeypatch):
    monkeypatch.setattr("hf_select.selection.steps.STEPS", dict(STEPS))
    from hf_select.selection import steps as module

    def every_nth(dataset, *, n: int = 2, offset: int = 0):
        """Every ``n``-th row.

        Args:
            n: the step between kept rows.
        """

    register_step("every_nth", every_nth, param_help={"offset": "the first kept row."})
    spec = module.STEPS["every_nth"]
    assert spec.param_help == {"n": "the step between kept rows.", "offset": "the first kept row."}
    with pytest.raises(ValueError, match="documented both"):
        register_step("every_nth2", every_nth, param_help={"n": "again"})


def test_list_steps_prints_every_step_or_the_named_ones(capsys):
    assert main(["select", "--list-steps"]) == 0
    out = capsys.readouterr().out
    assert out == reference_text()
    for name in STEPS:
        assert f"\n{name}: " in f"\n{out}"
    assert main(["select", "--list-steps", "kcenter"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kcenter: ") and "\nrandom: " not in out and "- k (int | None; default None)" in out
    assert main(["select", "--list-steps", "kcentre"]) == 2
    assert "registered steps" in capsys.readouterr().err
