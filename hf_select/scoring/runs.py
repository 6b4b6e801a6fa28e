"""A scoring run's folder: shard files written atomically, ``run.json``, what a run reused (:class:`ScoreRun`), and
the process layout; shared by the in-memory and the streamed runs of :meth:`~hf_select.scoring.base.BaseScorer.score`.

Example:
    >>> stable_hash("ifd", {"a": 1}) == stable_hash("ifd", {"a": 1})
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def stable_hash(*parts: Any) -> str:
    """A short hex digest of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _distributed_state(cpu: bool = False) -> tuple[int, int, Any]:
    """(process index, number of processes, state or None) without starting anything when not launched."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not launched:
        return 0, 1, None
    from accelerate import PartialState

    state = PartialState(cpu=cpu) if cpu else PartialState()
    return state.process_index, state.num_processes, state


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write a parquet file through a temporary file and a rename, so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclasses.dataclass(frozen=True)
class ScoreRun:
    """What a :meth:`BaseScorer.score` call did: the folder of its shards, and how many of them (and of the rows) it
    took from an earlier identical run instead of scoring them.

    Example:
        >>> run = ScoreRun(folder=Path("/tmp/ifd-0123"), shards=2, rows=3000, reused_shards=2, reused_rows=3000)
        >>> print(run.message("ifd"))  # doctest: +ELLIPSIS
        hf-select ifd: reusing the scores of an earlier identical run (3000 rows, 2 shards) from /tmp/ifd-0123; ...
    """

    folder: Path
    shards: int
    rows: int
    reused_shards: int = 0
    reused_rows: int = 0

    @property
    def reused(self) -> bool:
        """Whether any shard came from an earlier run."""
        return self.reused_shards > 0

    def message(self, name: str) -> str | None:
        """One line saying what was reused and from where (None when everything was scored now)."""
        if not self.reused:
            return None
        afresh = "to score afresh, pass cache=False (hf-select score --no-cache)"
        if self.reused_shards == self.shards:
            return (f"hf-select {name}: reusing the scores of an earlier identical run ({self.rows} rows, "
                    f"{self.shards} shards) from {self.folder}; {afresh}.")
        return (f"hf-select {name}: resuming an earlier identical run: {self.reused_rows} of {self.rows} rows "
                f"({self.reused_shards} of {self.shards} shards) already scored in {self.folder}; {afresh}.")


RUN_FILE = "run.json"
# The files a scoring run writes into its folder: finished shards, half-written ones (a killed run), run.json.
_OWN_FILE = re.compile(r"^(shard-\d{6}\.parquet|\.shard-\d{6}\.parquet\..+\.tmp|run\.json)$")


def clear_run_folder(folder: Path, *, only_half_written: bool = False) -> None:
    """Remove a scoring run's own files from ``folder`` (every one, or only the half-written shards of a killed
    run); any other file is left alone."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if _OWN_FILE.match(path.name) and (not only_half_written or path.name.startswith(".")) and path.is_file():
            path.unlink(missing_ok=True)
