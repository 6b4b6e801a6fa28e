"""``hf-select report --dataset scored/ --selection chosen/ --output report/``: plots and a markdown summary."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import HFSelectError
from ..io import load_rows
from .common import add_column_mapping


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="PNG plots and report.md for a selection (scores, embeddings, lengths, mix).")
    p.add_argument("--dataset", required=True, help="The scored dataset the selection was made from.")
    p.add_argument("--selection", required=True,
                   help="A folder written by `hf-select select`, or a dataset with a _row_id column.")
    p.add_argument("--output", required=True, help="Folder for report.md, report.json and the PNG files.")
    p.add_argument("--score-columns", default=None,
                   help="Comma-separated score columns (default: every float column).")
    p.add_argument("--group-columns", default=None,
                   help="Comma-separated category columns for the composition plots (default: those of source, "
                        "category, dataset, task, domain that exist).")
    p.add_argument("--embedding-column", default="embedding", help="Vector column for the PCA map.")
    p.add_argument("--title", default=None, help="Report title (default: Selection report).")
    p.add_argument("--split", default="train", help="Split to read from a DatasetDict folder or Hub id.")
    add_column_mapping(p)
    p.set_defaults(func=run)


def _columns(text: str | None) -> list[str] | None:
    if text is None:
        return None
    cols = [c.strip() for c in text.split(",") if c.strip()]
    if not cols:
        raise HFSelectError(f"no column names in {text!r}")
    return cols


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..report import make_report
    from ..selection.select import PROVENANCE_FILE, SelectionResult

    scored = load_rows(args.dataset, split=args.split)
    sel_path = Path(args.selection)
    selection = SelectionResult.load(sel_path) if (sel_path / PROVENANCE_FILE).is_file() else load_rows(sel_path)
    path = make_report(scored, selection, args.output, score_columns=_columns(args.score_columns),
                       title=args.title, embedding_column=args.embedding_column,
                       group_columns=_columns(args.group_columns), column_mapping=args.column_mapping)
    print(f"report written to {path}")
    return 0
