"""The config base every model-backed scorer config inherits (as TRL's ``ModelConfig`` is for models), and the
dict of a config that names cache folders and stage keys.

:class:`ScorerConfig` holds the fields the IFD, quality, necessity, indicator and embedding configs share: the model
(``model_name_or_path``, ``revision``, ``trust_remote_code``), where and how it runs (``dtype``, ``device``), how
much it reads (``max_length``), how rows are batched (``max_tokens_per_batch``, ``max_batch_size``) and how rows are
read (``column_mapping``). They are declared and validated here once; a subclass changes only a default
(:func:`shared`) and adds its own fields.

One token-budget rule (:meth:`ScorerConfig.token_budget`): ``max_tokens_per_batch=None`` means the scorer's
default for the device the model is on, :attr:`ScorerConfig.TOKEN_BUDGET` = (GPU, CPU) tokens, never below one
sequence of ``max_length``. Forward-pass scorers use 32,768 on a GPU and 1,024 on a CPU (on a CPU a forward pass is
compute-bound, and bigger batches only add padding and memory traffic: benchmarks/RESULTS.md); the necessity
scorer's budget counts generated tokens too and keeps 32,768 on both.

Renamed fields keep their old name working with a ``FutureWarning`` (:func:`renamed_fields`), and
:func:`config_to_dict` writes a config as it was written before the base existed (old names, the old fixed token
budgets, nested configs in their old field order), so the stage keys and run folders of earlier runs stay valid.

Example:
    >>> from hf_select import IFDConfig
    >>> cfg = IFDConfig(max_length=512)
    >>> cfg.max_batch_size, cfg.max_tokens_per_batch
    (256, None)
    >>> IFDConfig(max_batch_size=0)
    Traceback (most recent call last):
    ...
    ValueError: IFDConfig.max_batch_size must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..models import DTYPES
from .batching import CPU_TOKEN_BUDGET, GPU_TOKEN_BUDGET, default_token_budget

SHARED_HELP = {
    "model_name_or_path": "Model id (Hub) or local folder.",
    "revision": "Model revision (branch, tag or commit).",
    "dtype": f"One of {DTYPES} (auto: bf16 on a GPU that supports it and on a CPU where bf16 measures faster, else "
    "float32).",
    "device": "Device; default: this process's accelerate device.",
    "max_length": "Most tokens per scored sequence (lowered to the model's own limit).",
    "max_tokens_per_batch": "Token budget of one forward pass (rows x padded length); default (None): the scorer's "
                            "default for the device, 32768 on a GPU and 1024 on a CPU for forward passes.",
    "max_batch_size": "Most sequences in one forward pass.",
    "column_mapping": "Map your column names to instruction/input/output/messages/... names.",
    "trust_remote_code": "Allow model code from the Hub (off by default).",
}


def shared(name: str, default: Any, *, help: str | None = None) -> Any:  # noqa: A002 - the metadata key's name
    """A shared :class:`ScorerConfig` field with a scorer's own default (and optionally its own help text).

    Example:
        >>> shared("max_batch_size", 256).metadata["help"]
        'Most sequences in one forward pass.'
    """
    return field(default=default, metadata={"help": help or SHARED_HELP[name]})


def renamed_fields(**old_to_new: str) -> Callable[[type], type]:
    """Class decorator (above ``@dataclass``): the old field names still work in the constructor, with a
    ``FutureWarning``, and read the new field.

    Example:
        >>> import warnings
        >>> from hf_select import EmbedConfig
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     EmbedConfig(batch_size=8).max_batch_size
        8
        >>> str(caught[0].message)
        'EmbedConfig.batch_size is deprecated; use max_batch_size'
    """

    def wrap(cls: type) -> type:
        init = cls.__init__
        cls.RENAMED = {**getattr(cls, "RENAMED", {}), **old_to_new}

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **cls.rename_kwargs(kwargs))

        cls.__init__ = __init__
        for old, new in old_to_new.items():
            setattr(cls, old, property(functools.partial(_read_renamed, old=old, new=new),
                                       doc=f"Deprecated name of ``{new}``."))
        return cls

    return wrap


def _read_renamed(self: Any, *, old: str, new: str) -> Any:
    warnings.warn(f"{type(self).__name__}.{old} is deprecated; use {new}", FutureWarning, stacklevel=2)
    return getattr(self, new)


@dataclass
class ScorerConfig:
    """The fields every model-backed scorer config shares, and their validation (see the module docstring).

    Subclasses set ``MIN_MAX_LENGTH``, ``TOKEN_BUDGET`` and, for cache-key compatibility, ``KEY_NAMES`` (field ->
    the name :func:`config_to_dict` writes), ``KEY_BUDGET`` (what it writes for ``max_tokens_per_batch=None``),
    ``KEY_ORDER`` (the field order of the config's text inside another config's dict), ``KEY_EXTRA`` and
    ``KEY_OMITTED_AT`` (field -> the value at which :func:`config_to_dict` leaves it out: a field added later,
    so that the keys written before it existed stay valid).

    Example:
        >>> from hf_select import QualityConfig
        >>> QualityConfig(max_length=4)
        Traceback (most recent call last):
        ...
        ValueError: QualityConfig.max_length must be >= 8, got 4
    """

    model_name_or_path: str | None = shared("model_name_or_path", None)
    revision: str | None = shared("revision", None)
    dtype: str = shared("dtype", "auto")
    device: str | None = shared("device", None)
    max_length: int = shared("max_length", 1024)
    max_tokens_per_batch: int | None = shared("max_tokens_per_batch", None)
    max_batch_size: int = shared("max_batch_size", 64)
    column_mapping: dict[str, str] | None = shared("column_mapping", None)
    trust_remote_code: bool = shared("trust_remote_code", False)

    MIN_MAX_LENGTH: ClassVar[int] = 1
    TOKEN_BUDGET: ClassVar[tuple[int, int]] = (GPU_TOKEN_BUDGET, CPU_TOKEN_BUDGET)
    RENAMED: ClassVar[dict[str, str]] = {}
    KEY_NAMES: ClassVar[dict[str, str]] = {}
    KEY_BUDGET: ClassVar[int | None] = None
    KEY_ORDER: ClassVar[tuple[str, ...]] = ()
    KEY_EXTRA: ClassVar[dict[str, Any]] = {}
    KEY_OMITTED_AT: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        name = type(self).__name__
        if isinstance(self.model_name_or_path, os.PathLike):
            self.model_name_or_path = os.fspath(self.model_name_or_path)
        model = self.model_name_or_path
        if model is not None and (not isinstance(model, str) or not model):
            raise ValueError(f"{name}.model_name_or_path must be a model id or folder, got {model!r}")
        if self.revision is not None and not isinstance(self.revision, str):
            raise ValueError(f"{name}.revision must be a string (branch, tag or commit), got {self.revision!r}")
        if isinstance(self.dtype, str) and self.dtype not in DTYPES:
            raise ValueError(f"{name}.dtype must be one of {DTYPES}, got {self.dtype!r}")
        _check_int(name, "max_length", self.max_length, self.MIN_MAX_LENGTH)
        _check_int(name, "max_batch_size", self.max_batch_size, 1)
        if self.max_tokens_per_batch is not None:
            _check_int(name, "max_tokens_per_batch", self.max_tokens_per_batch, 1)
            least, what = self.min_token_budget()
            if self.max_tokens_per_batch < least:
                raise ValueError(f"{name}.max_tokens_per_batch ({self.max_tokens_per_batch}) must be >= {what} "
                                 f"({least}), or None for the device's default")
        if self.column_mapping is not None and (
            not isinstance(self.column_mapping, Mapping)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in self.column_mapping.items())
        ):
            raise ValueError(f"{name}.column_mapping must map column names to names (str -> str), got "
                             f"{self.column_mapping!r}")
        if not isinstance(self.trust_remote_code, bool):
            raise ValueError(f"{name}.trust_remote_code must be true or false, got {self.trust_remote_code!r}")

    # -- the token budget --------------------------------------------------------------------------------------------
    def min_token_budget(self) -> tuple[int, str]:
        """The smallest token budget that holds one sequence of the longest kind this scorer builds, and what it
        is in words (for the error message)."""
        return self.max_length, "max_length"

    def token_budget(self, model: Any = None) -> int:
        """Tokens per forward pass: ``max_tokens_per_batch``, or the default for the device ``model`` is on
        (:attr:`TOKEN_BUDGET`), never below :meth:`min_token_budget`.

        Example:
            >>> from hf_select import IFDConfig
            >>> IFDConfig().token_budget(None), IFDConfig(max_tokens_per_batch=4096).token_budget(None)
            (1024, 4096)
        """
        gpu, cpu = self.TOKEN_BUDGET
        budget = default_token_budget(self.max_tokens_per_batch, model, gpu=gpu, cpu=cpu)
        return budget if self.max_tokens_per_batch is not None else max(budget, self.min_token_budget()[0])

    def load_kwargs(self) -> dict[str, Any]:
        """The keyword arguments the model loaders take from the config (``load_causal_lm(name, **kwargs)``).

        Example:
            >>> from hf_select import IFDConfig
            >>> IFDConfig(dtype="float32").load_kwargs()
            {'dtype': 'float32', 'device': None, 'revision': None, 'trust_remote_code': False}
        """
        return {"dtype": self.dtype, "device": self.device, "revision": self.revision,
                "trust_remote_code": self.trust_remote_code}

    # -- old names ---------------------------------------------------------------------------------------------------
    @classmethod
    def rename_kwargs(cls, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """``kwargs`` with deprecated field names replaced by the new ones (a ``FutureWarning`` for each).

        Raises:
            TypeError: when a field is given under both names.
        """
        out = dict(kwargs)
        for old, new in cls.RENAMED.items():
            if old in out:
                warnings.warn(f"{cls.__name__}.{old} is deprecated; use {new}", FutureWarning, stacklevel=3)
                if new in out:
                    raise TypeError(f"{cls.__name__}: {old} is the old name of {new}; give only {new}")
                out[new] = out.pop(old)
        return out


def _check_int(name: str, field_name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}.{field_name} must be >= {minimum}, got {value}")


# -- the dict that names cache folders and stage keys ---------------------------------------------------------------
_PLAIN = (str, int, float, bool, type(None), list, dict)


def _key_value(config: Any, name: str) -> Any:
    value = getattr(config, name)
    if name == "max_tokens_per_batch" and value is None and isinstance(config, ScorerConfig):
        return config.KEY_BUDGET
    return value


def _key_text(value: Any) -> str:
    """A non-JSON value as text; a nested scorer config as its repr in its :attr:`ScorerConfig.KEY_ORDER`."""
    if isinstance(value, ScorerConfig) and value.KEY_ORDER:
        names = value.KEY_NAMES
        items = ", ".join(f"{names.get(n, n)}={_key_value(value, n)!r}" for n in value.KEY_ORDER)
        return f"{type(value).__qualname__}({items})"
    return str(value)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass: what names its cache folders and stage keys.

    For a :class:`ScorerConfig` the dict is written as before the base existed: renamed fields under their old
    names (:attr:`~ScorerConfig.KEY_NAMES`), a token budget left to the device rule as the fixed default these
    scorers had (:attr:`~ScorerConfig.KEY_BUDGET`; the budget only groups rows into forward passes), and a nested
    config as its old repr. A scorer whose output columns changed adds :attr:`~ScorerConfig.KEY_EXTRA`, so results
    of the old layout are not reused.

    Example:
        >>> from hf_select import EmbedConfig
        >>> d = config_to_dict(EmbedConfig())
        >>> d["batch_size"], d["max_tokens_per_batch"], "max_batch_size" in d
        (64, 16384, False)
    """
    names = getattr(config, "KEY_NAMES", {})
    omitted = getattr(config, "KEY_OMITTED_AT", {})
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = _key_value(config, f.name)
        if f.name in omitted and value == omitted[f.name]:
            continue
        out[names.get(f.name, f.name)] = value if isinstance(value, _PLAIN) else _key_text(value)
    out.update(getattr(config, "KEY_EXTRA", {}))
    return out
