"""The ``hf-select`` command line: ``hf-select score | select | report | push | demo | compare``.

Each subcommand lives in ``hf_select/commands/<name>.py`` and exposes ``register(subparsers)``; the parser
sets ``func``. File-level problems (missing file, not a dataset, no known columns) print one line that
starts with ``hf-select: error:`` and exit with code 2, never a traceback.

Example:
    $ hf-select score ifd --dataset alpaca.json --output out/
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMANDS = ("score", "select", "report", "push", "demo", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-select",
        description="Choose the instruction-tuning rows worth training on (IFD, MoDS, InstructMining).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log at INFO level.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hf_select.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"hf_select.commands.{name}":
                # Never skip a subcommand: a missing one would look like a typo of the user's, not a broken install.
                raise ImportError(
                    f"hf-select: the module of the subcommand {name!r} (hf_select/commands/{name}.py) is missing; "
                    "reinstall hf-select (pip install -e .) or remove the name from hf_select.cli.COMMANDS.",
                    name=err.name,
                ) from err
            raise
        module.register(sub)
    from .commands.common import use_formatter

    use_formatter(parser)  # every option's help shows its default
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from .errors import print_user_error
    from .io import transforms_outside_inputs

    try:
        with transforms_outside_inputs():  # datasets' cache files never land in an input folder
            code = args.func(args)
    except KeyboardInterrupt:
        print("hf-select: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if print_user_error(err):
            return 2
        raise
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
