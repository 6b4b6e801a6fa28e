"""Every status a scorer can write into its status column is in the scorer's declared list of statuses.

The scan reads the source (AST): string constants assigned into a status list (``status[r] = "oom"``), appended to
one, given as a default of ``first_error.get/setdefault``, or passed to ``RowError(...)`` in the module itself or in
any ``hf_select.formats`` function the module imports (followed through the calls inside ``formats``). A status a
scorer forwards from another scorer (the quality backend's) is checked against that scorer's list too.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re

import pytest

import hf_select.formats as formats_module

# module -> (name of its declared statuses, modules whose statuses it forwards)
DECLARED = {
    "hf_select.scoring.ifd": ("IFD_STATUSES", ("hf_select.scoring.ifd_seed",)),
    "hf_select.scoring.ifd_seed": ("SEED_STATUSES", ()),
    "hf_select.scoring.common": ("PAIR_STATUSES", ()),
    "hf_select.scoring.embed": ("EMBED_STATUSES", ()),
    "hf_select.scoring.quality": ("QUALITY_STATUSES", ("hf_select.scoring.common",)),
    "hf_select.scoring.necessity": ("NECESSITY_STATUSES", ()),
    "hf_select.scoring.indicators": ("INDICATOR_STATUSES", ("hf_select.scoring.quality",)),
}
_STATUS_NAME = re.compile(r"status|\bst\b")


def _row_error_constants(node: ast.AST) -> set[str]:
    out = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "RowError" and call.args:
            first = call.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                out.add(first.value)
    return out


def _formats_statuses() -> dict[str, set[str]]:
    """Per top-level function of ``hf_select.formats``: the RowError statuses it (or a function it calls) raises."""
    tree = ast.parse(inspect.getsource(formats_module))
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    direct = {name: _row_error_constants(fn) for name, fn in funcs.items()}
    calls = {name: {c.func.id for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                    and c.func.id in funcs} for name, fn in funcs.items()}
    closed = {}
    for name in funcs:
        seen, todo, statuses = set(), [name], set()
        while todo:
            f = todo.pop()
            if f in seen:
                continue
            seen.add(f)
            statuses |= direct[f]
            todo += calls[f]
        closed[name] = statuses
    return closed


def emitted_statuses(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    tree = ast.parse(inspect.getsource(module))
    found = _row_error_constants(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and _STATUS_NAME.search(ast.unparse(target.value)):
                    found.add(node.value.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            constants = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if node.func.attr == "append" and _STATUS_NAME.search(owner):
                found.update(constants)
            if node.func.attr in ("get", "setdefault") and re.search(r"error|status", owner) and len(node.args) == 2:
                found.update(constants[-1:] if isinstance(node.args[1], ast.Constant) else [])
    per_function = _formats_statuses()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("formats"):
            for alias in node.names:
                found |= per_function.get(alias.name, set())
    return found


def test_the_scan_sees_what_it_should():
    ifd = emitted_statuses("hf_select.scoring.ifd")
    assert {"oom", "non_finite", "prompt_too_long", "invalid_row", "template_mismatch", "empty_instruction"} <= ifd
    assert {"empty_text", "oom"} <= emitted_statuses("hf_select.scoring.embed")


@pytest.mark.parametrize("module_name", sorted(DECLARED))
def test_every_emitted_status_is_declared(module_name):
    attr, forwards = DECLARED[module_name]
    module = importlib.import_module(module_name)
    assert hasattr(module, attr), f"{module_name} declares no {attr}"
    declared = set(getattr(module, attr))
    emitted = emitted_statuses(module_name)
    for other in forwards:
        emitted |= set(getattr(importlib.import_module(other), DECLARED[other][0]))
    assert emitted - declared == set(), f"{module_name} emits statuses missing from {attr}"


def test_ifd_reverse_status_of_an_empty_instruction_is_declared(tiny_lm_path):
    from datasets import Dataset

    from hf_select.scoring.ifd import IFD_STATUSES, IFDConfig, IFDScorer

    ds = Dataset.from_list([{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "hi"}]},
                            {"messages": [{"role": "user", "content": "Say hi"},
                                          {"role": "assistant", "content": "hi"}]}])
    out = ds.map(IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template="chat", reverse=True)),
                 batched=True)
    assert out["ifd_reverse_status"][0] == "empty_instruction"
    assert set(out["ifd_reverse_status"]) | set(out["ifd_status"]) <= set(IFD_STATUSES)
