"""Reading and writing datasets: local json/jsonl/parquet/csv files, ``save_to_disk`` folders, Hub ids.

Example:
    >>> from hf_select.io import load_rows
    >>> ds = load_rows("alpaca.json")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import HFSelectError

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
OUTPUT_FORMATS = ("disk", "jsonl", "parquet")


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").is_file() or (path / "state.json").is_file()


def load_rows(source: str | os.PathLike, split: str = "train", *, streaming: bool = False,
              config: str | None = None) -> Any:
    """Load a ``datasets.Dataset`` from a file, a ``save_to_disk`` folder or a Hub id.

    With ``streaming`` a file, a folder of files or a Hub id is read as a ``datasets.IterableDataset`` (nothing is
    downloaded or converted up front; :meth:`~hf_select.scoring.base.BaseScorer.score` scores it shard by shard);
    a ``save_to_disk`` folder is already on disk and is streamed from there. ``config`` is the Hub dataset's
    configuration name (``load_dataset(name, config)``).

    Raises:
        HFSelectError: one line naming the source when it is missing, empty, or not a dataset.
    """
    import datasets

    src = str(source)
    path = Path(src)
    if streaming:
        return _stream_rows(src, split, config)
    if path.is_dir():
        if _is_saved_dataset(path):
            try:
                ds = datasets.load_from_disk(src)
            except Exception as err:
                raise HFSelectError(f"{src}: not a readable save_to_disk folder ({_root_detail(err)}).") from err
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
            return datasets.load_dataset(src, config, split=split)
        except Exception as err:
            raise HFSelectError(f"{src}: could not load it from the Hub: {err}") from err
    raise HFSelectError(f"{src}: no such file or directory.")


def _stream_rows(src: str, split: str, config: str | None) -> Any:
    """:func:`load_rows` with ``streaming``: an ``IterableDataset`` over the same sources (the file checks are the
    same; a file's content is read only as the stream is)."""
    import datasets

    path = Path(src)
    if path.is_dir() and _is_saved_dataset(path):
        return load_rows(src, split).to_iterable_dataset()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in _FILE_BUILDERS)
        if not files:
            raise HFSelectError(f"{src} is a directory with no dataset in it (expected a save_to_disk folder or "
                                "json/jsonl/parquet/csv files).")
        builder = _FILE_BUILDERS[files[0].suffix]
        data_files = [str(p) for p in files if _FILE_BUILDERS[p.suffix] == builder]
    elif path.suffix in _FILE_BUILDERS or path.exists():
        if not path.exists():
            raise HFSelectError(f"{src}: no such file.")
        if path.stat().st_size == 0:
            raise HFSelectError(f"{src}: the file is empty.")
        builder, data_files = _FILE_BUILDERS.get(path.suffix, "json"), [src]
    elif src.count("/") == 1 and not src.startswith((".", "/")):
        from .models import hub_is_offline

        if hub_is_offline():
            raise HFSelectError(f"{src}: no such file, and the Hub is unreachable to stream it as a dataset id.")
        try:
            return datasets.load_dataset(src, config, split=split, streaming=True)
        except Exception as err:
            raise HFSelectError(f"{src}: could not stream it from the Hub: {err}") from err
    else:
        raise HFSelectError(f"{src}: no such file or directory.")
    try:
        with _quiet_dataset_builders():
            return datasets.load_dataset(builder, data_files=data_files, split="train", streaming=True)
    except Exception as err:
        raise HFSelectError(f"{src}: not a readable {builder} dataset ({_root_detail(err)}).") from err


@contextlib.contextmanager
def _quiet_dataset_builders() -> Iterator[None]:
    """Silence the builders' own "Failed to load JSON ..." log lines: the outcome is reported once, by us."""
    log = logging.getLogger("datasets.packaged_modules")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _root_detail(err: BaseException) -> str:
    """The innermost cause's first line (``DatasetGenerationError`` hides the useful message in its cause)."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:200] if text else 'no detail'}"


_BARE_NULL_LINE = re.compile(rb"^[ \t\r]*null[ \t\r]*$", re.MULTILINE)


def _has_bare_null_line(files: list[str]) -> bool:
    """True when a line of a JSON file is a bare ``null``: pyarrow's JSON reader (26.0) crashes the whole process
    (segmentation fault) on a block that starts with one, so such files are read line by line instead."""
    for f in files:
        with open(f, "rb") as fh:
            try:
                with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    if _BARE_NULL_LINE.search(data):
                        return True
            except ValueError:  # an empty file cannot be mapped
                continue
    return False


def _load_files(builder: str, files: list[str], label: str) -> Any:
    import datasets

    if builder == "json" and _has_bare_null_line(files):
        rows = _tolerant_json_rows(files)
        if rows is None:
            raise HFSelectError(f"{label}: not a readable json dataset (no line holds a JSON object).")
        return rows
    try:
        with _quiet_dataset_builders():
            ds = datasets.load_dataset(builder, data_files=files, split="train")
        if builder == "json":
            # pyarrow's JSON reader passes bytes that are not UTF-8 into string columns; they would fail later, on
            # first access. Check now and let the line-by-line reader mark those rows instead.
            ds.data.table.validate(full=True)
        return ds
    except Exception as err:
        if builder == "json":
            rows = _tolerant_json_rows(files)
            if rows is not None:
                return rows
        detail = _root_detail(err)
        if "corresponds to no data" in detail:
            raise HFSelectError(f"{label}: no rows in it.") from err
        raise HFSelectError(f"{label}: not a readable {builder} dataset ({detail}).") from err


def _json_row_text(obj: Any) -> str:
    """One row as JSON text for ``_raw``; "null" (an invalid row) for a non-object or text that is not Unicode
    (undecodable bytes, unpaired surrogates), which Arrow cannot hold."""
    if not isinstance(obj, dict):
        return "null"
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "null"
    return text


def _tolerant_json_rows(files: list[str]) -> Any:
    """Fallback for JSON Lines with broken lines: keep every parseable object line with its own columns, and mark
    each broken line.

    A line that is not valid JSON, not an object, or holds text that is not Unicode (undecodable bytes, unpaired
    surrogates) becomes a row whose every column is null (status ``invalid_row`` in the scorers); the good lines
    keep the user's columns. Only when the good lines' values cannot share one Arrow type per column (e.g. a column
    that is text in one line and a list in another) does every row become JSON text under ``_raw``, which the
    scorers decode row by row (with a warning). Returns None when the file is not line-oriented JSON at all.
    """
    import datasets

    objects: list[dict[str, Any] | None] = []
    for f in files:
        with open(f, "rb") as fh:
            # surrogateescape keeps undecodable bytes visible (as lone surrogates) so their rows can be refused.
            text = fh.read().decode("utf-8", errors="surrogateescape")
        text = text.removeprefix("\ufeff")
        stripped = text.lstrip()
        if stripped.startswith("["):
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError:
                data = None  # not one JSON array: JSON Lines whose first line happens to be a list
            if isinstance(data, list):
                objects.extend(_json_object(x) for x in data)
                continue
        for line in text.split("\n"):  # not splitlines(): U+2028 and friends are legal inside JSON strings
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            objects.append(_json_object(obj))
    if not any(o is not None for o in objects):
        return None  # not one JSON object: the file is not a dataset
    columns = list(dict.fromkeys(k for o in objects if o is not None for k in o))
    try:
        return datasets.Dataset.from_dict({c: [o.get(c) if o is not None else None for o in objects] for c in columns})
    except Exception as err:  # values of one column that Arrow cannot hold as one type
        logging.getLogger(__name__).warning(
            "%s: its columns hold values of mixed types (%s); every row is kept as JSON text in the column '_raw' "
            "(the scorers read it row by row).", ", ".join(files), _root_detail(err))
        return datasets.Dataset.from_list([{"_raw": _json_row_text(o)} for o in objects])


def _json_object(obj: Any) -> dict[str, Any] | None:
    """``obj`` when it is a JSON object whose text is Unicode (Arrow can hold it), else None (an invalid row)."""
    return obj if _json_row_text(obj) != "null" else None


@contextmanager
def transforms_outside_inputs() -> Iterator[None]:
    """Within the block, ``map`` / ``filter`` / ``select`` / ``sort`` of any dataset write their cache files to a
    temporary folder (removed when the process ends), never next to the dataset's own files.

    A dataset read with ``load_from_disk`` (a ``save_to_disk`` folder) keeps its cache files in that folder, so
    without this a command that only reads its input (``hf-select select``, ``report``) wrote ``cache-*.arrow`` files
    into it. Inside the block datasets' caching is off (``datasets.disable_caching``) and it is restored after; the
    scorers' own resumable shards (:meth:`hf_select.scoring.base.BaseScorer.score`) do not depend on it. Every
    ``hf-select`` command runs inside it.

    Example:
        >>> import datasets
        >>> with transforms_outside_inputs():
        ...     datasets.is_caching_enabled()
        False
        >>> datasets.is_caching_enabled()
        True
    """
    import datasets

    was_enabled = datasets.is_caching_enabled()
    datasets.disable_caching()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_caching()


@contextmanager
def atomic_folder(output: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder beside ``output`` that replaces ``output`` only when the block finishes.

    A kill or an error inside the block leaves ``output`` as it was (or absent), never half written.

    Example:
        >>> with atomic_folder("/tmp/hf-select-doc-out") as tmp:  # doctest: +SKIP
        ...     (tmp / "data.json").write_text("[]")
    """
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield staging
        if out.exists():
            backup = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, backup / "old")
            os.replace(staging, out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_OUTPUT_FILES = {"data.jsonl", "data.parquet"}


def check_output_path(output: str | os.PathLike, fmt: str = "disk", inputs: tuple[str, ...] = ()) -> Path:
    """Every problem of an output folder that can be seen before any work: call it before loading a model.

    Refused: an unknown format; an output that is an input or holds one; an output that is a file, or below a file;
    an existing folder that is not an earlier output (it would be replaced); a folder that cannot be written.

    Example:
        >>> import tempfile
        >>> check_output_path(Path(tempfile.mkdtemp()) / "out").name
        'out'
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
    if out.exists() and not out.is_dir():
        raise HFSelectError(f"--output {out} is a file; the output is a folder: choose a new folder.")
    if out.is_dir():
        names = {p.name for p in out.iterdir()}
        if names and not (_is_saved_dataset(out) or names <= _OUTPUT_FILES):
            shown = ", ".join(sorted(names)[:5])
            raise HFSelectError(f"--output {out} is a folder holding other files ({shown}), which the output would "
                                "replace; choose a new or empty folder.")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise HFSelectError(f"--output {out} is below {parent}, which is a file, not a folder; choose another folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HFSelectError(f"--output {out}: cannot write in {parent} (permission denied); choose another folder.")
    return out


def save_rows(dataset: Any, output: str | os.PathLike, fmt: str = "disk", inputs: tuple[str, ...] = ()) -> Path:
    """Save a dataset atomically: ``disk`` (a ``save_to_disk`` folder), ``jsonl`` or ``parquet`` (a file inside).

    Refuses what :func:`check_output_path` refuses (e.g. writing over any path in ``inputs``).
    """
    out = check_output_path(output, fmt, inputs)
    with atomic_folder(out) as staging:
        if fmt == "disk":
            dataset.save_to_disk(str(staging))
        elif fmt == "jsonl":
            dataset.to_json(str(staging / "data.jsonl"), lines=True, force_ascii=False)
        else:
            dataset.to_parquet(str(staging / "data.parquet"))
    return out
