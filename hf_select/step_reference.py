"""The reference of every registered selection step, built from the step registry so that it cannot drift.

For each step of :data:`hf_select.selection.steps.STEPS`: its name, what it does (the first paragraph of its
function's docstring), the drop reasons its docstring names, and every parameter with its type and default (from
the function's signature) and its meaning (from the docstring's ``Args:`` section or the ``param_help`` it was
registered with, :mod:`hf_select.selection.step_help`). The keys :func:`hf_select.selection.select` adds to steps
(``seed``, and ``stratify_by`` / ``min_share`` on the steps that take quotas) are listed where they apply.

``hf-select select --list-steps`` prints it as text; ``docs/STEPS.md`` is its markdown form, written by
``python -m hf_select.step_reference > docs/STEPS.md`` (``tests/test_step_reference.py`` fails when it is stale).

Example:
    >>> doc = describe_step("threshold")
    >>> [(p.name, p.default) for p in doc.params][:3]
    [('column', None), ('min', 'None'), ('max', 'None')]
    >>> doc.params[0].required, doc.reasons
    (True, ('nan_score', 'below_min', 'above_max'))
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

REGENERATE = "python -m hf_select.step_reference > docs/STEPS.md"

# Keys that select() itself reads from a step mapping (see hf_select.selection.select and .quotas).
SEED_HELP = ("this step's own seed for its random draws (default: the step list's ``seed:``, else ``hf-select "
             "select --seed``, else 0).")
STRATIFY_HELP = ("composition quotas: a column (``stratify_by: source``) or embedding clusters (``{clusters: 20, "
                 "column: embedding}``); each stratum keeps its pool share of the step's budget, shortfalls move to "
                 "the other strata and are counted in the provenance.")
MIN_SHARE_HELP = ("with ``stratify_by``: relax the quotas to a floor of ``min_share`` x each stratum's share "
                  "(``None``: 1.0, the exact pool shares; 0 keeps the unstratified composition).")


@dataclass(frozen=True)
class ParamDoc:
    """One parameter of a step: ``default`` is the repr of its default (``None`` when it is required)."""

    name: str
    type: str
    default: str | None
    required: bool
    meaning: str


@dataclass(frozen=True)
class StepDoc:
    """What the reference says about one step."""

    name: str
    summary: str
    reasons: tuple[str, ...]
    params: tuple[ParamDoc, ...]
    renamed: tuple[tuple[str, str], ...]


def _plain(text: str) -> str:
    """Docstring markup to markdown: Sphinx roles to their last name, ````x```` to ```x```, one line."""
    text = re.sub(r":mod:`([\w.]+)`", r"`\1`", text)
    text = re.sub(r":[a-z]+:`~?\.?([\w.]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    text = text.replace("``", "`")
    return " ".join(text.split())


def _reasons(doc: str) -> tuple[tuple[str, ...], str]:
    """(the drop reasons a docstring lists after ``Reason(s):``, the first paragraph without that sentence)."""
    paragraphs = doc.split("\n\n")
    summary = paragraphs[0]
    match = re.search(r"Reasons?:\s*(.*?)(?:\n\s*\n|\Z)", doc, flags=re.S)
    if not match:
        return (), summary
    sentence = re.sub(r"\([^()]*\)", "", match.group(1))
    sentence = re.split(r"\.(?:\s|$)", sentence, maxsplit=1)[0]
    reasons = tuple(re.findall(r"``([^`]+)``", sentence))
    summary = re.sub(r"\s*Reasons?:.*", "", summary, flags=re.S) or summary
    return reasons, summary


def _annotation(param: inspect.Parameter) -> str:
    ann = param.annotation
    if ann is inspect.Parameter.empty:
        return "any"
    return ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))


def describe_step(name: str) -> StepDoc:
    """The reference entry of the registered step ``name``.

    Raises:
        KeyError: no step of that name (the message lists the registered ones).

    Example:
        >>> [p.name for p in describe_step("random").params]
        ['count', 'fraction', 'seed', 'stratify_by', 'min_share']
    """
    from .selection import quotas
    from .selection.steps import STEPS

    if name not in STEPS:
        raise KeyError(f"no selection step named {name!r}; registered steps: {sorted(STEPS)}")
    spec = STEPS[name]
    doc = inspect.getdoc(spec.function) or ""
    reasons, summary = _reasons(doc)
    summary = summary.replace("the module docstring", f"the docstring of :mod:`{spec.function.__module__}`")
    params: list[ParamDoc] = []
    for p in list(inspect.signature(spec.function).parameters.values())[1:]:
        if p.kind is p.VAR_KEYWORD or p.name == "seed":
            continue
        required = p.default is inspect.Parameter.empty
        params.append(ParamDoc(p.name, _annotation(p), None if required else repr(p.default), required,
                               _plain(spec.param_help.get(p.name, ""))))
    if spec.takes_seed:
        params.append(ParamDoc("seed", "int | None", "None", False, _plain(SEED_HELP)))
    if name == "threshold" or any(b in spec.params for b in quotas.BUDGET_PARAMS):
        params.append(ParamDoc("stratify_by", "str | dict | None", "None", False, _plain(STRATIFY_HELP)))
        if name != "threshold":
            params.append(ParamDoc("min_share", "float | None", "None", False, _plain(MIN_SHARE_HELP)))
    return StepDoc(name, _plain(summary), reasons, tuple(params), tuple(sorted(spec.renamed.items())))


def describe_steps() -> list[StepDoc]:
    """Every registered step's entry, by name."""
    from .selection.steps import available_steps

    return [describe_step(name) for name in available_steps()]


def reference_text(names: Sequence[str] | None = None, width: int = 100) -> str:
    """The reference as plain text (what ``hf-select select --list-steps`` prints), for ``names`` or every step.

    Example:
        >>> print(reference_text(["random"]).splitlines()[0])
        random: A seeded uniform random sample: the baseline every selection should beat.
    """
    docs = [describe_step(n) for n in names] if names else describe_steps()
    wrap = textwrap.TextWrapper(width=width, subsequent_indent="      ")
    out: list[str] = []
    for doc in docs:
        out.extend(textwrap.wrap(f"{doc.name}: {doc.summary}", width=width, subsequent_indent="  "))
        if doc.reasons:
            out.extend(textwrap.wrap("drop reasons: " + ", ".join(doc.reasons), width=width, initial_indent="  ",
                                     subsequent_indent="    "))
        for p in doc.params:
            default = "required" if p.required else f"default {p.default}"
            wrap.initial_indent = "  - "
            out.extend(wrap.wrap(f"{p.name} ({p.type}; {default}): {p.meaning}"))
        for old, new in doc.renamed:
            out.append(f"  (old name {old!r} still works for {new!r}, with a FutureWarning)")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_markdown() -> str:
    """The reference as markdown: the contents of ``docs/STEPS.md``."""
    docs = describe_steps()
    lines = [
        "# Selection steps",
        "",
        f"<!-- Generated from the step registry by `{REGENERATE}`; do not edit by hand. -->",
        "",
        "Every step `hf-select select` and `hf_select.selection.select` can run, generated from the step registry "
        "(`hf_select.selection.STEPS`): what each step does, the reasons it gives the rows it drops (in "
        "`dropped/` and `provenance.json`), and each parameter with its type, default and meaning. "
        "`hf-select select --list-steps` prints the same. Ready-made step lists: [examples/](../examples/).",
        "",
        "A step list is YAML: a list of steps, or a mapping with `steps:` and an optional `seed:`. Each step is a "
        "mapping with `step:` (the name) and its parameters; steps run in order, each on the rows the previous "
        "ones kept. A budget is `count` (rows) or `fraction` (a share of the step's input rows, unless `of` says "
        "otherwise).",
        "",
        "```yaml",
        "seed: 0",
        "steps:",
        "  - {step: threshold, column: ifd, max: 1.0, strict: true}",
        "  - {step: top, column: ifd, fraction: 0.1}",
        "```",
        "",
        "| step | what it does |",
        "|---|---|",
    ]
    lines += [f"| [`{d.name}`](#{d.name}) | {_cell(d.summary)} |" for d in docs]
    for d in docs:
        lines += ["", f"## {d.name}", "", d.summary, ""]
        if d.reasons:
            lines += ["Drop reasons: " + ", ".join(f"`{r}`" for r in d.reasons) + ".", ""]
        lines += ["| parameter | type | default | meaning |", "|---|---|---|---|"]
        for p in d.params:
            default = "required" if p.required else f"`{p.default}`"
            lines.append(f"| `{p.name}` | `{_cell(p.type)}` | {_cell(default)} | {_cell(p.meaning)} |")
        for old, new in d.renamed:
            lines += ["", f"`{old}` is the old name of `{new}`: still accepted, with a `FutureWarning`."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hf_select.step_reference [--text] [STEP ...]``: print the markdown reference (or the text one)."""
    parser = argparse.ArgumentParser(prog="python -m hf_select.step_reference",
                                     description=f"Print the selection step reference; `{REGENERATE}` updates "
                                                 "the docs page.")
    parser.add_argument("steps", nargs="*", help="Only these steps (text form; default: every step).")
    parser.add_argument("--text", action="store_true", help="Plain text, as hf-select select --list-steps prints.")
    args = parser.parse_args(argv)
    sys.stdout.write(reference_text(args.steps) if args.text or args.steps else reference_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
