"""One error hierarchy: every user-fixable error hf-select raises derives from HFSelectError and is printed as one
line; the standard bases stay, so existing ``except ValueError`` / ``except RuntimeError`` clauses still catch."""

from __future__ import annotations

import pickle

import pytest

import hf_select.cli as cli
from hf_select.errors import HFSelectError, user_error_message
from hf_select.formats import DatasetFormatError, RowError, detect_format
from hf_select.models import ModelLoadError


@pytest.mark.parametrize(("cls", "std"), [(DatasetFormatError, ValueError), (RowError, ValueError),
                                          (ModelLoadError, RuntimeError)])
def test_errors_derive_from_the_base_and_keep_their_standard_base(cls, std):
    assert issubclass(cls, HFSelectError) and issubclass(cls, std)
    err = cls("no_assistant_turn", "a\n  multi-line   message") if cls is RowError else cls("a\n  multi-line message")
    assert user_error_message(err) == "a multi-line message"


def test_a_real_format_error_is_caught_as_the_base_and_reads_as_one_line():
    with pytest.raises(HFSelectError) as info:
        detect_format(["foo", "bar"])
    assert isinstance(info.value, DatasetFormatError)
    message = user_error_message(info.value)
    assert message and "\n" not in message


def test_row_error_keeps_its_status_through_pickle():
    err = pickle.loads(pickle.dumps(RowError("empty_response")))
    assert isinstance(err, HFSelectError) and err.status == "empty_response"


def test_a_bug_is_not_a_user_error_and_the_unused_cli_error_is_gone():
    assert user_error_message(KeyError("x")) is None
    assert not hasattr(cli, "CLIError")
