"""Reading and writing datasets: local json/jsonl/parquet/csv files, ``save_to_disk`` folders, Hub ids.

Example:
    >>> from hf_select.io import load_rows
    >>> ds = load_rows("alpaca.json")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import HFSelectError

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
OUTPUT_FORMATS = ("disk", "jsonl", "parquet")


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").is_file() or (path / "state.json").is_file()


def load_rows(source: str | os.PathLike, split: str = "train") -> Any:
    """Load a ``datasets.Dataset`` from a file, a ``save_to_disk`` folder or a Hub id.

    Raises:
        HFSelectError: one line naming the source when it is missing, empty, or not a dataset.
    """
    import datasets

    src = str(source)
    path = Path(src)
    if path.is_dir():
        if _is_saved_dataset(path):
            ds = datasets.load_from_disk(src)
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise HFSelectError(f"{src}: has splits {list(ds)}, not {split!r}; pass --split.")
                ds = ds[split]
            return ds
        files = sorted(p for p in path.iterdir() if p.suffix in _FILE_BUILDERS)
        if not files:
            raise HFSelectError(
                f"{src} is a directory with no dataset in it (expected a save_to_disk folder or "
                "json/jsonl/parquet/csv files)."
            )
        builder = _FILE_BUILDERS[files[0].suffix]
        return _load_files(builder, [str(p) for p in files if _FILE_BUILDERS[p.suffix] == builder], src)
    if path.suffix in _FILE_BUILDERS or path.exists():
        if not path.exists():
            raise HFSelectError(f"{src}: no such file.")
        if path.stat().st_size == 0:
            raise HFSelectError(f"{src}: the file is empty.")
        return _load_files(_FILE_BUILDERS.get(path.suffix, "json"), [src], src)
    if src.count("/") == 1 and not src.startswith((".", "/")):
        from .models import hub_is_offline

        if hub_is_offline():
            raise HFSelectError(f"{src}: no such file, and the Hub is unreachable to load it as a dataset id.")
        try:
            return datasets.load_dataset(src, split=split)
        except Exception as err:
            raise HFSelectError(f"{src}: could not load it from the Hub: {err}") from err
    raise HFSelectError(f"{src}: no such file or directory.")


def _load_files(builder: str, files: list[str], label: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(builder, data_files=files, split="train")
    except Exception as err:
        if builder == "json":
            rows = _tolerant_json_rows(files)
            if rows is not None:
                return rows
        raise HFSelectError(
            f"{label}: not a readable {builder} dataset ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'})."
        ) from err


def _tolerant_json_rows(files: list[str]) -> Any:
    """Fallback for JSON Lines with broken lines or mixed types: keep the parseable object lines, mark the rest.

    Every row becomes a dict of JSON-encoded values under ``_raw`` so mixed types survive Arrow; the scorers
    decode it. Returns None when the file is not line-oriented JSON at all.
    """
    import datasets

    rows: list[dict[str, Any]] = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        stripped = text.lstrip()
        if stripped.startswith("["):
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError:
                return None
            rows.extend({"_raw": json.dumps(x, ensure_ascii=False)} for x in data)
            continue
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            rows.append({"_raw": json.dumps(obj, ensure_ascii=False) if isinstance(obj, dict) else "null"})
    if not any(r["_raw"] != "null" for r in rows):
        return None  # not one JSON object: the file is not a dataset
    return datasets.Dataset.from_list(rows)


def save_rows(dataset: Any, output: str | os.PathLike, fmt: str = "disk", inputs: tuple[str, ...] = ()) -> Path:
    """Save a dataset atomically: ``disk`` (a ``save_to_disk`` folder), ``jsonl`` or ``parquet`` (a file inside).

    Refuses to write over any path in ``inputs``.
    """
    if fmt not in OUTPUT_FORMATS:
        raise HFSelectError(f"--format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    out = Path(output)
    for src in inputs:
        try:
            same = out.resolve() == Path(src).resolve() or Path(src).resolve().is_relative_to(out.resolve())
        except OSError:
            same = False
        if same:
            raise HFSelectError(f"--output {out} would overwrite the input {src}; choose another folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        if fmt == "disk":
            dataset.save_to_disk(str(staging))
        elif fmt == "jsonl":
            dataset.to_json(str(staging / "data.jsonl"), lines=True, force_ascii=False)
        else:
            dataset.to_parquet(str(staging / "data.parquet"))
        if out.exists():
            backup = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, backup / "old")
            os.replace(staging, out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
