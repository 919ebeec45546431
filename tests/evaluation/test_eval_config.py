"""The evaluation YAML: defaults, shorthand, command-line overrides and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from clickadapt.evaluation.config import (
    EvaluationConfig,
    StrategySpec,
    load_evaluation_config,
    parse_evaluation_config,
    select_strategies,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "eval"

MINIMAL = {
    "model": "brain",
    "stream": {"reader": "brats", "split": "test", "modality": "T1c"},
    "strategies": ["frozen", {"name": "mid", "label": "mid-noccg", "overrides": {"click_loss": False}}],
    "output": "out",
}


def test_defaults_and_strategy_shorthand() -> None:
    config = parse_evaluation_config(dict(MINIMAL))
    assert config.order_seeds == [0, 1, 2] and config.click_seeds == [0]
    assert config.budget == 10
    assert config.user == "oaims"
    assert config.limit is None and config.source_validation is None and config.shuffle
    assert config.strategies[0] == StrategySpec(name="frozen")
    assert [spec.display_name for spec in config.strategies] == ["frozen", "mid-noccg"]
    assert config.strategies[1].overrides == {"click_loss": False}
    assert config.is_shipped_model
    assert config.output == Path("out")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"strategies": ["frozen", "magic"]}, "strategies.1.name", "unknown strategy 'magic'"),
        ({"user": "nobody"}, "user", "unknown simulated user"),
        ({"budget": 0}, "budget", "greater than or equal to 1"),
        ({"order_seeds": [1, 1]}, "order_seeds", "distinct"),
        ({"click_seeds": [2, 2]}, "click_seeds", "distinct"),
        ({"seeds": [0, 1, 2]}, "seeds", "write order_seeds: [0, 1, 2] and click_seeds"),
        ({"strategies": ["mid", {"name": "mid"}]}, "strategies", "appear twice"),
        ({"strategies": [{"name": "post", "overrides": {"warp": 9}}]}, "strategies.0", "warp"),
        ({"stream": {"reader": "nowhere"}}, "stream", "unknown reader"),
        ({"stream": None}, "stream", ""),
        ({"surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_invalid_fields_are_named(change: dict[str, object], field: str, message: str) -> None:
    data = dict(MINIMAL) | change
    with pytest.raises(ValueError, match=r"my\.yaml") as error:
        parse_evaluation_config(data, "my.yaml")
    assert f"my.yaml: {field}" in str(error.value)
    assert message in str(error.value)


def test_missing_required_field_is_named() -> None:
    data = {key: value for key, value in MINIMAL.items() if key != "model"}
    with pytest.raises(ValueError, match="model: Field required"):
        parse_evaluation_config(data)


def test_yaml_loading_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("model: brain\nstream: {reader: brats, split: test}\nstrategies: [frozen]\nbudget: 7\n")
    overrides = {"budget": 3, "order_seeds": [4], "click_seeds": [5, 6], "limit": None, "user": "center"}
    config = load_evaluation_config(path, overrides)
    assert config.budget == 3 and config.order_seeds == [4] and config.click_seeds == [5, 6]
    assert config.user == "center" and config.limit is None
    assert config.output == Path("outputs") / "eval" / "exp"


def test_yaml_loading_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.yaml"):
        load_evaluation_config(tmp_path / "absent.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"list\.yaml: expected a mapping"):
        load_evaluation_config(path)
    path.write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match=r"list\.yaml: not valid YAML"):
        load_evaluation_config(path)


def test_select_strategies_prefers_configured_specs() -> None:
    configured = parse_evaluation_config(dict(MINIMAL)).strategies
    chosen = select_strategies(configured, ["mid-noccg", "oaims"])
    assert chosen[0].overrides == {"click_loss": False}
    assert chosen[1] == StrategySpec(name="oaims")
    with pytest.raises(ValueError, match=r"--strategies: name: .*unknown strategy 'nope'"):
        select_strategies(configured, ["nope"])


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda path: path.name)
def test_shipped_example_configs_are_valid(path: Path) -> None:
    config = load_evaluation_config(path)
    assert isinstance(config, EvaluationConfig)
    assert config.output.parts[:2] == ("outputs", "eval")
    assert {spec.name for spec in config.strategies} >= {"frozen", "oaims"}
