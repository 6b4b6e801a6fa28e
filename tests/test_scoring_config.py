"""The scorer config base: shared fields and validation, old field names, the token-budget rule, the dict that
names stage keys (unchanged from before the base), declared column types and the status-column naming rule."""

from __future__ import annotations

import dataclasses
import math
import warnings
from types import SimpleNamespace

import pytest
from datasets import Dataset

from hf_select.commands.score import parse_overrides
from hf_select.scoring import (
    EmbedConfig,
    Embedder,
    EmbedScorer,
    IFDConfig,
    IFDScorer,
    IndicatorConfig,
    IndicatorScorer,
    NecessityConfig,
    NecessityScorer,
    QualityConfig,
    QualityScorer,
    embed,
    score_embed,
)
from hf_select.scoring.base import config_to_dict, stable_hash
from hf_select.scoring.config import SHARED_HELP, ScorerConfig
from hf_select.selection import select

CONFIGS = (IFDConfig, QualityConfig, NecessityConfig, IndicatorConfig, EmbedConfig)


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_scorer_config_shares_the_base_fields(cls):
    assert issubclass(cls, ScorerConfig)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(SHARED_HELP) <= set(fields)
    for name in SHARED_HELP:
        assert fields[name].metadata["help"], name
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.max_batch_size must be >= 1, got 0"):
        cls(max_batch_size=0)
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.dtype must be one of"):
        cls(dtype="fp8")
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.column_mapping must map"):
        cls(column_mapping={"instruction": 3})
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.max_tokens_per_batch \(4\) must be >="):
        cls(max_tokens_per_batch=4)


@pytest.mark.parametrize(("cls", "old", "new", "value"), [
    (EmbedConfig, "batch_size", "max_batch_size", 8),
    (NecessityConfig, "max_prompt_length", "max_length", 300),
])
def test_old_field_names_still_work_with_a_warning(cls, old, new, value):
    with pytest.warns(FutureWarning, match=f"{cls.__name__}.{old} is deprecated; use {new}"):
        cfg = cls(**{old: value})
    assert getattr(cfg, new) == value
    with pytest.warns(FutureWarning):
        assert getattr(cfg, old) == value
    with pytest.raises(TypeError, match=f"give only {new}"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls(**{old: value, new: value})
    assert parse_overrides([f"{old}={value}"], cls) == {old: value}  # hf-select score --set takes it too


def test_a_scorer_takes_old_names_as_overrides():
    with pytest.warns(FutureWarning):
        scorer = Embedder(EmbedConfig(), batch_size=3)
    assert scorer.config.max_batch_size == 3


def test_one_token_budget_rule_by_device():
    gpu_model = SimpleNamespace(parameters=lambda: iter([SimpleNamespace(device=SimpleNamespace(type="cuda"))]))
    for cls in (IFDConfig, QualityConfig, IndicatorConfig, EmbedConfig):
        assert cls().token_budget(None) == max(1024, cls().max_length)  # no model or a CPU model: the CPU default
        assert cls().token_budget(gpu_model) == 32768
        assert cls(max_length=2048).token_budget(None) == 2048  # never below one sequence
        assert cls(max_tokens_per_batch=4096).token_budget(gpu_model) == 4096
    # generation: the budget counts prompt + new tokens, and stays high on a CPU
    assert NecessityConfig().token_budget(None) == 32768
    assert NecessityConfig(max_length=40000, max_new_tokens=10).token_budget(None) == 40010


# Hashes of config_to_dict(...) computed with the code before the config base (commit adecc89): the stage keys
# and run folders of earlier runs hash these dicts, so they must not move.
BEFORE = {
    "EmbedConfig()": (lambda: EmbedConfig(), "46dccf243fd14277"),
    "IFDConfig()": (lambda: IFDConfig(), "346ec6bea779ab36"),
    "IndicatorConfig()": (lambda: IndicatorConfig(), "fd3758353e1420bc"),
    "NecessityConfig()": (lambda: NecessityConfig(), "4a447806af372e5e"),
    "the pool embedder of hf-select compare": (
        lambda: EmbedConfig(model_name_or_path="e", text="row", normalize=True), "1326203c33a27d3a"),
    "MoDS necessity (the recipe's call, judge)": (
        lambda: NecessityConfig(model_name_or_path="seed", quality=QualityConfig(max_length=512, max_batch_size=64),
                                template="auto", max_new_tokens=48, max_length=512, max_batch_size=64, seed=0),
        "179a9c8374d2b1ed"),
    "InstructMining indicators (the recipe's call, reward)": (
        lambda: IndicatorConfig(model_name_or_path="m", template="auto", max_length=512,
                                quality=QualityConfig(backend="reward", model_name_or_path="OpenAssistant/rm",
                                                      max_length=512)),
        "c9d3fd5669bdc7b2"),
    "Cherry's causal-LM embedder": (
        lambda: EmbedConfig(model_name_or_path="b", backend="causal_lm", text="prompt", template="alpaca",
                            max_length=512), "b1860a1e659a94e1"),
    "Superfiltering's IFD": (
        lambda: IFDConfig(model_name_or_path="gpt2", template="auto", layout="superfiltering", max_length=512),
        "1ce80e03fd62ed65"),
}


@pytest.mark.parametrize("label", sorted(BEFORE))
def test_config_dicts_of_earlier_runs_are_unchanged(label):
    make, digest = BEFORE[label]
    assert stable_hash(config_to_dict(make())) == digest


def test_the_quality_config_dict_says_its_columns_changed():
    d = config_to_dict(QualityConfig())
    assert d["score_column"] == "quality"  # judge_score results cached before the rename are not reused
    assert stable_hash(d) != "29012618adc08e18"  # QualityConfig() before the rename
    assert config_to_dict(EmbedConfig())["batch_size"] == 64 and "max_batch_size" not in config_to_dict(EmbedConfig())


SCORERS = [
    IFDScorer(IFDConfig()), IFDScorer(IFDConfig(reverse=True)), QualityScorer(QualityConfig()),
    QualityScorer(QualityConfig(backend="reward")), NecessityScorer(NecessityConfig()),
    IndicatorScorer(IndicatorConfig()), IndicatorScorer(IndicatorConfig(quality={"backend": "reward"})),
    IndicatorScorer(IndicatorConfig(perplexity=False)), Embedder(EmbedConfig()),
]


@pytest.mark.parametrize("scorer", SCORERS, ids=lambda s: f"{type(s).__name__}-{'-'.join(s.output_columns)}")
def test_declared_features_and_the_status_rule(scorer):
    features = scorer.features
    assert scorer.output_columns == tuple(features)
    assert scorer._schema() == features.arrow_schema
    statuses = [c for c in features if c.endswith("_status")]
    assert statuses and all(features[c].dtype == "string" for c in statuses)
    for status in statuses:  # <score column>_status, or <prefix>_status for a family of <prefix>_* columns
        base = status[: -len("_status")]
        assert base in features or any(c.startswith(base + "_") for c in features if c != status), status
    for column, feature in features.items():
        if column.endswith(("_tokens", "_len")):
            assert feature.dtype == "int64", column


def test_embed_names_follow_the_pattern_as_aliases():
    assert EmbedScorer is Embedder and score_embed is embed


def test_selection_reads_the_old_judge_column_name():
    scored = Dataset.from_dict({"quality": [1.0, 4.5, 3.2, math.nan], "quality_backend": ["judge"] * 4})
    with pytest.warns(FutureWarning, match="'judge_score' is now called 'quality'"):
        old = select(scored, [{"step": "threshold", "column": "judge_score", "min": 3.0}])
    new = select(scored, [{"step": "threshold", "column": "quality", "min": 3.0}])
    assert old.dataset["quality"] == new.dataset["quality"] == [4.5, 3.2]
    # a dataset scored before the rename is read by the new name
    before = Dataset.from_dict({"judge_score": [1.0, 4.5, 3.2]})
    assert select(before, [{"step": "top", "column": "quality", "count": 1}]).dataset["judge_score"] == [4.5]
