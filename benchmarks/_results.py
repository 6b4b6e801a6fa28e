"""Append a result row to a section's table in benchmarks/RESULTS.md (shared by the benchmark scripts)."""

from __future__ import annotations

from pathlib import Path


def append_row(path: Path, heading: str, header: str, line: str) -> None:
    """Add ``line`` after the last table row of section ``heading``, creating the section (with ``header``)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if heading not in text:
        text = text.rstrip() + f"\n\n{heading}\n\n{header}\n"
    lines = text.rstrip().split("\n")
    start = lines.index(heading)
    end = start + 1
    while end < len(lines) and not lines[end].startswith("## "):
        end += 1
    rows = [i for i in range(start + 1, end) if lines[i].startswith("|")]
    lines.insert(rows[-1] + 1 if rows else end, line)
    path.write_text("\n".join(lines) + "\n")
