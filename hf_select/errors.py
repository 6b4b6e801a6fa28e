"""User-facing errors and how the command line words them.

One hierarchy: :class:`HFSelectError` is the base of every error hf-select raises for a problem the user can fix;
:class:`hf_select.formats.DatasetFormatError` (a dataset with no known format), :class:`hf_select.formats.RowError`
(one row that cannot be scored; caught per row and written to a ``*_status`` column) and
:class:`hf_select.models.ModelLoadError` (a model found neither on the Hub nor offline) derive from it, and keep
their standard bases (``ValueError``, ``RuntimeError``) so that existing ``except`` clauses still catch them. The
command line and the recipes print any of them as one ``hf-select: error: ...`` line (exit code 2).

Example:
    >>> from hf_select.formats import DatasetFormatError
    >>> issubclass(DatasetFormatError, HFSelectError) and issubclass(DatasetFormatError, ValueError)
    True
    >>> user_error_message(HFSelectError("data.json: no such file"))
    'data.json: no such file'
"""

from __future__ import annotations

import re
import sys
from typing import Any


class HFSelectError(Exception):
    """A file-level or configuration problem the user can fix; its message names the thing and the fix."""


_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")


def redact(text: str) -> str:
    """Hide anything that looks like a Hugging Face token.

    Example:
        >>> redact("token hf_abcdefghijklmnopqrstuvwxyz123 failed")
        'token hf_*** failed'
    """
    return _TOKEN.sub("hf_***", text)


def user_error_message(err: BaseException) -> str | None:
    """The one-line message for an error a user can fix, or None for a bug (which keeps its traceback)."""
    known: tuple[type[BaseException], ...] = (
        HFSelectError,  # with DatasetFormatError, RowError and ModelLoadError
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
    )
    if isinstance(err, known):
        return redact(" ".join(str(err).split()))
    if isinstance(err, OSError) and getattr(err, "errno", None) == 28:
        return redact(f"no space left on the device: {err}. Finished shards are kept; free space and run again.")
    if isinstance(err, ValueError) and type(err).__module__.startswith("hf_select"):
        return redact(str(err))
    return None


def print_user_error(err: BaseException) -> bool:
    """Print an error a user can fix as one ``hf-select: error: ...`` line on stderr and return True; return False
    (printing nothing) for a bug, which the caller re-raises with its traceback.

    Example:
        >>> import contextlib, io
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     print_user_error(HFSelectError("no rows")), print_user_error(KeyError("x"))
        (True, False)
        >>> err.getvalue().strip()
        'hf-select: error: no rows'
    """
    message = user_error_message(err)
    if message is None:
        return False
    print(f"hf-select: error: {message}", file=sys.stderr)
    return True


def scrub(value: Any) -> Any:
    """A copy of a JSON-like value with tokens hidden: string values under keys naming a token are masked and
    every other string goes through :func:`redact`.

    Example:
        >>> scrub({"sft_kwargs": {"hub_token": "secret"}, "note": "hf_abcdefghijklmnopqrstuvwxyz123"})
        {'sft_kwargs': {'hub_token': '***'}, 'note': 'hf_***'}
    """
    if isinstance(value, dict):
        secret = {k for k, v in value.items() if isinstance(v, str) and v and "token" in str(k).lower()}
        return {k: "***" if k in secret else scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub(v) for v in value)
    if isinstance(value, str):
        return redact(value)
    return value
