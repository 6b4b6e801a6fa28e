"""No silent wrong results: each case here used to give a wrong answer (or lose the user's data) without an error.

A scorer given another model with ``set_model`` gets its own cache entry; ``cache=False`` removes only the scorer's
own files; the out-of-memory retry runs after the failed batch's memory is released; ``hf-select score`` refuses a
bad output path before it loads a model; a broken JSON Lines line does not hide the good lines' columns; a missing
subcommand and an unanswered Hub check are said, not skipped.
"""

from __future__ import annotations

import logging

import pytest

from hf_select import cli
from hf_select.scoring.embed import EmbedConfig, Embedder

# -- point 10: a missing subcommand, an unanswered Hub check --------------------------------------------------------


def test_a_missing_subcommand_module_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "no_such_command"))
    with pytest.raises(ImportError, match="no_such_command"):
        cli.build_parser()


def test_every_subcommand_is_registered():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(cli.COMMANDS)


def test_embedder_says_when_the_hub_check_fails(monkeypatch, caplog):
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("hf_select.models.hub_is_offline", lambda: False)  # "online", but the check fails
    monkeypatch.setattr("hf_select.scoring.embed.hub_is_offline", lambda: False, raising=False)
    monkeypatch.setattr(huggingface_hub, "file_exists", unreachable)
    with caplog.at_level(logging.WARNING, logger="hf_select"):
        backend = Embedder(EmbedConfig(model_name_or_path="someone/some-model")).resolved_backend()
    assert backend == "causal_lm"
    text = caplog.text
    assert "someone/some-model" in text and "backend" in text and "causal_lm" in text

