"""``--set FIELD=VALUE`` values read as the type the config field's annotation means.

``yaml.safe_load`` alone reads YAML 1.1, in which ``1e-4`` is a string (a float needs a dot there), so
``--set learning_rate=1e-4`` reached the config as ``'1e-4'``. :func:`coerce_field` reads the dataclass field's
annotation instead (``typing.get_type_hints``: the annotations are strings under ``from __future__ import
annotations``) and converts the text to it: ``float`` (``1e-4``, ``2``, ``.5``), ``int`` (whole numbers only),
``bool`` (true/false, yes/no, 1/0, any case), ``X | None`` (``none``/``null``/``~`` give None), a union (the first
type the text parses as), ``list[X]`` (``a,b,c`` or a YAML list) and mappings (YAML or JSON). Any other type
is read as YAML (:func:`load_yaml`, which also reads ``1e-4`` as a float). Text that is not the field's type
raises one :class:`~hf_select.errors.HFSelectError` naming the field, the value and the type expected.

Imports nothing heavy: the callers pass the config class they imported when the command runs.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Config:
    ...     learning_rate: float = 2e-5
    ...     epochs: int = 1
    ...     resume: bool = True
    ...     output_dir: str | None = None
    ...     methods: list[str] | None = None
    >>> coerce_field(Config, "learning_rate", "1e-4"), coerce_field(Config, "resume", "No")
    (0.0001, False)
    >>> coerce_field(Config, "output_dir", "none"), coerce_field(Config, "methods", "random,ifd")
    (None, ['random', 'ifd'])
    >>> coerce_field(Config, "epochs", "2.5")
    Traceback (most recent call last):
    ...
    hf_select.errors.HFSelectError: --set epochs=2.5: expected int (e.g. --set epochs=1)
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

import yaml

from ..errors import HFSelectError

__all__ = ["coerce_field", "field_type", "load_yaml", "parse_value", "type_text"]

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_NONE = ("none", "null", "~")


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-4``, ``1E5`` and ``1.0e4`` as floats (as YAML 1.2 and JSON do)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, except that exponents without a dot are floats too.

    Example:
        >>> load_yaml("{mods: {quality_fraction: 5e-1}, seeds: [1, 2]}")
        {'mods': {'quality_fraction': 0.5}, 'seeds': [1, 2]}
    """
    return yaml.load(text, Loader=_Loader)  # safe: a SafeLoader subclass


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation naming something only imported for type checkers: read each field as YAML
        return {}


def field_type(cls: type, name: str) -> Any:
    """The type of the dataclass field ``name`` of ``cls`` (``Any`` when it cannot be resolved).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class C:
        ...     limit: int | None = None
        >>> field_type(C, "limit")
        int | None
    """
    hint = _hints(cls).get(name)
    if hint is None:
        declared = next((f.type for f in dataclasses.fields(cls) if f.name == name), None)
        hint = declared if declared is not None and not isinstance(declared, str) else Any
    return hint


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def type_text(tp: Any) -> str:
    """How an error names the type, e.g. ``int or none``, ``list of str``, ``mapping``.

    Example:
        >>> type_text(float | None), type_text(list[int]), type_text(bool)
        ('float or none', 'list of int', 'bool (true/false, yes/no, 1/0)')
    """
    args = _union_args(tp)
    if args is not None:
        return " or ".join(dict.fromkeys(type_text(a) for a in args))
    if tp is type(None):
        return "none"
    if tp is bool:
        return "bool (true/false, yes/no, 1/0)"
    if tp in (int, float, str):
        return tp.__name__
    origin = typing.get_origin(tp)
    if origin in (list, tuple, set, frozenset):
        items = typing.get_args(tp)
        return f"list of {type_text(items[0])}" if items else "list"
    if origin is dict or tp is dict or origin is Mapping:
        return "mapping"
    return "YAML"


def _example(tp: Any, default: Any) -> str:
    """A value of type ``tp`` for an error's ``e.g.``: the field's default when it is a plain value of that type."""
    args = _union_args(tp)
    if args is not None:
        real = [a for a in args if a is not type(None)]
        return _example(real[0], default) if real else "none"
    if tp is bool:
        return str(default).lower() if isinstance(default, bool) else "true"
    if tp is int:
        return str(default) if isinstance(default, int) and not isinstance(default, bool) else "3"
    if tp is float:
        return repr(default) if isinstance(default, float) else "1e-4"
    if tp is str:
        return default if isinstance(default, str) and default and " " not in default else "text"
    origin = typing.get_origin(tp)
    if origin in (list, tuple, set, frozenset):
        items = typing.get_args(tp)
        one = _example(items[0], None) if items else "a"
        return f"{one},{one}"
    if origin is dict or tp is dict or origin is Mapping:
        return "'{key: value}'"
    return "VALUE"


class _Mismatch(ValueError):
    """The text is not a value of the type asked for."""


def parse_value(tp: Any, raw: str) -> Any:
    """``raw`` read as a value of type ``tp``; raises ``ValueError`` when it is not one.

    Example:
        >>> parse_value(float | str, "0.25"), parse_value(float | str, "all"), parse_value(list[int], "[1, 2]")
        (0.25, 'all', [1, 2])
    """
    text = raw.strip()
    args = _union_args(tp)
    if args is not None:
        if type(None) in args and text.lower() in _NONE:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(arg, raw)
            except ValueError:
                continue
        raise _Mismatch(raw)
    if tp is type(None):
        if text.lower() in _NONE:
            return None
        raise _Mismatch(raw)
    if tp is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise _Mismatch(raw)
    if tp is int:
        return int(text)  # a ValueError for 2.5, 3.0, 1e3, five
    if tp is float:
        return float(text)
    if tp is str:
        return raw
    origin = typing.get_origin(tp)
    if origin in (list, tuple, set, frozenset) or tp is list:
        items = typing.get_args(tp)
        item_type = items[0] if items else Any
        if not text.startswith("["):
            return [parse_value(item_type, p.strip()) for p in text.split(",")] if text else []
        try:
            parts = yaml.load(text, Loader=yaml.BaseLoader)  # every scalar as its text
        except yaml.YAMLError as err:
            raise _Mismatch(raw) from err
        if not isinstance(parts, list):
            raise _Mismatch(raw)
        if not all(isinstance(p, str) for p in parts):  # nested lists or mappings: as YAML, unchecked
            return _load(raw)
        return [parse_value(item_type, p) for p in parts]
    if origin is dict or tp is dict or origin is Mapping:
        loaded = _load(raw)
        if not isinstance(loaded, Mapping):
            raise _Mismatch(raw)
        return dict(loaded)
    return _load(raw)  # Any, a nested config class, a type the annotation does not say


def _load(raw: str) -> Any:
    try:
        return load_yaml(raw)
    except yaml.YAMLError as err:
        raise _Mismatch(raw) from err


def coerce_field(cls: type, name: str, raw: str, *, key: str | None = None) -> Any:
    """``raw`` (the text after ``=`` in ``--set name=raw``) as the value the dataclass field ``cls.name`` takes.

    ``name`` may also be an old field name in ``cls.RENAMED`` (it takes the new field's type). ``key`` is how an
    error names the option (default: ``name``; e.g. ``mods.quality_fraction`` for a recipe option).

    Raises:
        HFSelectError: ``cls`` has no field ``name``, or ``raw`` is not a value of its type, e.g.
            ``--set random_seeds=five: expected int (e.g. --set random_seeds=3)``.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class C:
        ...     budget: float | str = 0.1
        ...     options: dict | None = None
        >>> coerce_field(C, "budget", "2"), coerce_field(C, "options", '{"n": 1e3}')
        (2.0, {'n': 1000.0})
        >>> coerce_field(C, "colour", "red")
        Traceback (most recent call last):
        ...
        hf_select.errors.HFSelectError: --set colour: C has no such field; fields: ['budget', 'options']
    """
    label = key or name
    fields = {f.name: f for f in dataclasses.fields(cls)}
    target = getattr(cls, "RENAMED", {}).get(name, name)
    if target not in fields:
        raise HFSelectError(f"--set {label}: {cls.__name__} has no such field; fields: {sorted(fields)}")
    tp = field_type(cls, target)
    try:
        return parse_value(tp, raw)
    except ValueError:
        f = fields[target]
        default = f.default if f.default is not dataclasses.MISSING else None
        raise HFSelectError(f"--set {label}={raw}: expected {type_text(tp)} "
                            f"(e.g. --set {label}={_example(tp, default)})") from None
