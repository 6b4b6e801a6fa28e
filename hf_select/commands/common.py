"""What the subcommands' parsers share: the help formatter that shows every option's default, and the
``--column-mapping YOUR_COLUMN=FIELD`` option (score, select, report). Imports nothing heavy.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_column_mapping(p)
    >>> p.parse_args(["--column-mapping", "answer_text=output", "--column-mapping", "q=instruction"]).column_mapping
    {'answer_text': 'output', 'q': 'instruction'}
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

# The row fields a column can be mapped to (hf_select.formats reads rows through these names).
MAPPING_FIELDS = ("instruction", "input", "output", "system", "history", "messages", "conversations", "prompt",
                  "completion")
COLUMN_MAPPING_HELP = (
    "Read your column YOUR_COLUMN as the row field FIELD (repeatable), e.g. --column-mapping q_text=instruction "
    "--column-mapping answer_text=output; FIELD is one of " + ", ".join(MAPPING_FIELDS) + ". Without it the columns "
    "are recognised by their names (question/answer, instruction/response work as they are)."
)


class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help unless the help already says its default (or it is required);
    ``store_true`` flags read ``(default: off)``, repeatable options ``(default: none)``. Description and epilog
    paragraphs are wrapped, except those with indented lines (examples), which are kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.split("\n\n")
        return "\n\n".join(
            p if any(line[:1].isspace() for line in p.splitlines()) else
            textwrap.fill(" ".join(p.split()), width, initial_indent=indent, subsequent_indent=indent,
                          break_on_hyphens=False)
            for p in paragraphs
        )

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.required or action.default is argparse.SUPPRESS
                or "default" in text):
            return text
        value = action.default
        if isinstance(action, argparse._StoreTrueAction):
            shown = "off"
        elif value is None:
            return text  # the help must say what None means; tests/test_cli_help.py checks it does
        elif value in ([], {}):
            shown = "none"
        else:
            shown = str(value)
        return f"{text} (default: {shown.replace('%', '%%')})"


class _ColumnMappingAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        text = str(values)
        column, sep, target = text.partition("=")
        column, target = column.strip(), target.strip()
        if not sep or not column or not target:
            parser.error(f"{option_string} {text!r}: expected YOUR_COLUMN=FIELD, e.g. {option_string} answer=output")
        if target not in MAPPING_FIELDS:
            parser.error(f"{option_string} {text!r}: {target!r} is not a row field; FIELD is one of "
                         f"{', '.join(MAPPING_FIELDS)} (YOUR_COLUMN=FIELD: your column on the left)")
        mapping = dict(getattr(namespace, self.dest, None) or {})
        mapping[column] = target
        setattr(namespace, self.dest, mapping)


def add_column_mapping(parser: argparse.ArgumentParser) -> None:
    """Add ``--column-mapping YOUR_COLUMN=FIELD`` (repeatable; ``args.column_mapping`` is a dict or None)."""
    parser.add_argument("--column-mapping", action=_ColumnMappingAction, default=None, metavar="YOUR_COLUMN=FIELD",
                        help=COLUMN_MAPPING_HELP + " (default: none)")


def use_formatter(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and its subcommands' parsers the :class:`HelpFormatter`."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                use_formatter(sub)
