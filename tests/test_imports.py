"""The package's import structure: no import cycle between modules, and ``import hf_select`` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hf_select

ROOT = Path(hf_select.__file__).resolve().parent
# Modules allowed to form a cycle: none.
KNOWN_CYCLE_MODULES: set[str] = set()


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the hf_select modules it imports, at module level or inside functions (a cycle either way),
    but not under ``if TYPE_CHECKING:``; a module's own parent packages are left out (they are imported first
    whatever the module says)."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, (path, is_package) in modules.items():
        package = module if is_package else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
                       for stmt in block.body for n in ast.walk(stmt)}  # never imported at run time
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                subs = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules]
                names = subs if len(subs) == len(node.names) else [source, *subs]
            for name in names:
                target = owner(name) if name.startswith("hf_select") else None
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(group)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_known_edges():
    graph = import_graph()
    assert "hf_select.callbacks" in graph["hf_select.training.trainer"]  # a function-level import counts
    assert "hf_select.columns" in graph["hf_select.callbacks"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]


def test_no_import_cycle():
    found = [sorted(group) for group in cycles(import_graph()) if not group <= KNOWN_CYCLE_MODULES]
    assert not found, f"import cycles: {found}"


def test_import_hf_select_loads_no_torch_or_transformers():
    code = ("import sys, hf_select; heavy = [m for m in ('torch', 'transformers', 'datasets', 'trl') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT.parent)
    assert out.stdout.strip() == "[]"



def test_cli_help_loads_no_torch_transformers_datasets_or_trl():
    """Building the parser and printing every subcommand's help (what `hf-select --help` and `hf-select CMD --help`
    do) imports none of the heavy libraries: they load when a command runs."""
    code = (
        "import argparse, contextlib, io, sys\n"
        "from hf_select.cli import build_parser\n"
        "parser = build_parser()\n"
        "subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for argv in [['--help']] + [[name, '--help'] for name in subs] + [['score', 'ifd', '--set', 'help']]:\n"
        "        try:\n"
        "            build_parser().parse_args(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted(subs), [m for m in ('torch', 'transformers', 'datasets', 'trl') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT.parent)
    names, heavy = out.stdout.strip().rsplit("] ", 1)
    assert "score" in names and "select" in names and "demo" in names
    assert heavy == "[]", f"--help imported {heavy}; import them inside the command's run function"
