"""``--set FIELD=VALUE`` values read as the field's type: ``hf-select compare --set learning_rate=1e-4`` (its own
--help example, once a YAML 1.1 string) and recipe options, ``hf-select score --set``, and one clear error for a
value of the wrong type."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import pytest

from hf_select.commands.compare import config_from_args
from hf_select.commands.field_values import coerce_field, load_yaml
from hf_select.commands.score import parse_overrides
from hf_select.errors import HFSelectError


def _compare_args(*sets: str, **flags: Any) -> argparse.Namespace:
    """What the compare parser gives for ``--pool a.json --eval e.json --output out --set ...``."""
    values = dict(pool=["a.json"], eval=["e.json"], output="/tmp/hf-select-cmp", budget=None, methods=None,
                  model=None, pool_limit=None, eval_limit=None, random_seeds=None, set=list(sets))
    values.update(flags)
    return argparse.Namespace(**values)


@dataclass
class _Config:
    rate: float = 2e-5
    steps: int = 1
    flag: bool = False
    name: str = "auto"
    folder: str | None = None
    limit: int | None = None
    budget: float | str = 0.1
    tags: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    options: dict[str, Any] | None = None
    anything: Any = None


# -- compare ----------------------------------------------------------------------------------------------------------
def test_compare_learning_rate_1e_4_is_a_float():
    config = config_from_args(_compare_args("learning_rate=1e-4", "num_train_epochs=3", "max_length=512"))
    assert config.learning_rate == 0.0001 and isinstance(config.learning_rate, float)
    assert config.num_train_epochs == 3.0 and config.max_length == 512 and isinstance(config.max_length, int)


def test_compare_wrong_type_is_one_error_naming_field_value_and_type():
    with pytest.raises(HFSelectError) as err:
        config_from_args(_compare_args("random_seeds=five"))
    message = str(err.value)
    assert "random_seeds" in message and "five" in message and "int" in message
    assert "\n" not in message and message.startswith("--set random_seeds=five: expected int")
    with pytest.raises(HFSelectError, match=r"--set max_length=2\.5: expected int"):
        config_from_args(_compare_args("max_length=2.5"))


def test_compare_bool_none_list_and_mapping_fields():
    config = config_from_args(_compare_args(
        "train=No", "resume=FALSE", "report=1", "target_limit=none", "quality_model_name_or_path=null",
        "methods=random,longest", "method_args={mods: {quality_fraction: 5e-1}}",
    ))
    assert (config.train, config.resume, config.report) == (False, False, True)
    assert config.target_limit is None and config.quality_model_name_or_path is None
    assert config.methods == ["random", "longest"]
    assert config.method_args == {"mods": {"quality_fraction": 0.5}}
    # a YAML/JSON list, and "none" is a plain string where None is not allowed
    config = config_from_args(_compare_args('methods=["random", "full"]', "report_to=none"))
    assert config.methods == ["random", "full"] and config.report_to == "none"
    with pytest.raises(HFSelectError, match=r"--set train=maybe: expected bool"):
        config_from_args(_compare_args("train=maybe"))
    with pytest.raises(HFSelectError, match=r"--set method_args=\[1\]: expected mapping or none"):
        config_from_args(_compare_args("method_args=[1]"))


def test_compare_flags_still_win_and_config_checks_still_run():
    config = config_from_args(_compare_args("budget=0.5", "random_seeds=2", budget=0.25))
    assert config.budget == 0.25 and config.random_seeds == 2
    assert config_from_args(_compare_args("budget=50")).budget == 50  # a row count stays an int
    with pytest.raises(HFSelectError, match=r"CompareConfig\.budget"):
        config_from_args(_compare_args("budget=-1"))
    with pytest.raises(HFSelectError, match="CompareConfig has no such field"):
        config_from_args(_compare_args("colour=blue"))


def test_compare_recipe_options_take_the_recipe_arguments_types():
    config = config_from_args(_compare_args("mods.necessity_max_new_tokens=64", "mods.quality_fraction=5e-1",
                                            "cherry.ppl_band=10,90"))
    mods = config.method_args["mods"]
    assert mods["necessity_max_new_tokens"] == 64 and isinstance(mods["necessity_max_new_tokens"], int)
    assert mods["quality_fraction"] == 0.5
    assert config.method_args["cherry"] == {"ppl_band": [10.0, 90.0]}
    with pytest.raises(HFSelectError, match=r"--set mods\.necessity_max_new_tokens=lots: expected int"):
        config_from_args(_compare_args("mods.necessity_max_new_tokens=lots"))
    with pytest.raises(HFSelectError, match=r"--set mods\.colour: MoDSArguments has no such field"):
        config_from_args(_compare_args("mods.colour=blue"))


# -- score ------------------------------------------------------------------------------------------------------------
def test_score_set_reads_the_field_types():
    from hf_select.scoring.indicators import IndicatorConfig
    from hf_select.scoring.necessity import NecessityConfig

    out = parse_overrides(["mtld_threshold=7e-1", "perplexity=no"], IndicatorConfig)
    assert out == {"mtld_threshold": 0.7, "perplexity": False} and isinstance(out["mtld_threshold"], float)
    assert IndicatorConfig(**out).mtld_threshold == 0.7
    assert parse_overrides(["temperature=5e-1"], NecessityConfig) == {"temperature": 0.5}
    assert parse_overrides(["max_prompt_length=300"], NecessityConfig) == {"max_prompt_length": 300}  # old name
    with pytest.raises(HFSelectError, match=r"--set temperature=hot: expected float"):
        parse_overrides(["temperature=hot"], NecessityConfig)


# -- coerce_field -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "raw", "expected"), [
    ("rate", "1e-4", 1e-4), ("rate", "2", 2.0), ("rate", ".5", 0.5), ("rate", "1E3", 1000.0),
    ("steps", "3", 3), ("steps", "-1", -1),
    ("flag", "true", True), ("flag", "Yes", True), ("flag", "1", True),
    ("flag", "FALSE", False), ("flag", "no", False), ("flag", "0", False),
    ("name", "none", "none"), ("name", "alpaca", "alpaca"),
    ("folder", "None", None), ("folder", "null", None), ("folder", "out/x", "out/x"),
    ("limit", "none", None), ("limit", "12", 12),
    ("budget", "0.25", 0.25), ("budget", "5e-1", 0.5), ("budget", "all", "all"),
    ("tags", "a,b, c", ["a", "b", "c"]), ("tags", "[a, 'b c']", ["a", "b c"]), ("tags", "", []),
    ("sizes", "100,200", [100, 200]), ("sizes", "[1, 2]", [1, 2]),
    ("options", '{"n": 1e3, "name": x}', {"n": 1000.0, "name": "x"}), ("options", "none", None),
    ("anything", "1e-4", 1e-4), ("anything", "[1, a]", [1, "a"]),
])
def test_coerce_field(name, raw, expected):
    value = coerce_field(_Config, name, raw)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("name", "raw", "expected"), [
    ("rate", "fast", "expected float (e.g. --set rate=2e-05)"),
    ("steps", "2.5", "expected int (e.g. --set steps=1)"),
    ("steps", "3.0", "expected int"),
    ("flag", "maybe", "expected bool (true/false, yes/no, 1/0)"),
    ("limit", "many", "expected int or none (e.g. --set limit=3)"),
    ("sizes", "1,x", "expected list of int"),
    ("options", "a,b", "expected mapping or none"),
    ("options", "{a: [", "expected mapping or none"),
])
def test_coerce_field_errors_name_field_value_and_type(name, raw, expected):
    with pytest.raises(HFSelectError) as err:
        coerce_field(_Config, name, raw)
    assert str(err.value).startswith(f"--set {name}={raw}: {expected}")


def test_coerce_field_labels_and_unknown_fields():
    with pytest.raises(HFSelectError, match=r"^--set mods\.steps=x: expected int"):
        coerce_field(_Config, "steps", "x", key="mods.steps")
    with pytest.raises(HFSelectError, match=r"^--set colour: _Config has no such field; fields: \["):
        coerce_field(_Config, "colour", "red")


def test_load_yaml_reads_exponents_as_floats_and_is_otherwise_safe_load():
    assert load_yaml("[1e-4, 1.0e4, -2E-3, 1.5, 3, yes, '1e-4', 1_000]") == [1e-4, 1e4, -2e-3, 1.5, 3, True,
                                                                          "1e-4", 1000]
    with pytest.raises(Exception, match="could not determine a constructor"):
        load_yaml("!!python/object:os.system x")
