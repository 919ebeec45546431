"""``bench/paper_numbers.yaml``: the paper's published numbers as a data file that the report reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from bench.harness.config import load_bench_config
from bench.harness.paper import PAPER_NUMBERS_YAML, load_paper_numbers
from bench.harness.report import _paper_section

REPOSITORY = Path(__file__).resolve().parents[2]
FULL = REPOSITORY / "configs" / "bench" / "full.yaml"


def test_the_file_parses_and_holds_method_md_numbers() -> None:
    paper = load_paper_numbers()
    by_dataset = {result.dataset: result for result in paper.results}
    assert set(by_dataset) == {"BraTS T1", "BraTS T1c", "G1020", "PAPILA", "Drishti-GS1", "ATLAS T1"}
    assert by_dataset["BraTS T1c"].dice["oaims"] == (70.4, 82.9, 87.5)
    assert by_dataset["BraTS T1"].dice["frozen"] == (20.7, 46.8, 62.5)
    assert by_dataset["PAPILA"].dice["post"] == (None, None, 85.8)
    assert by_dataset["ATLAS T1"].budget == 3 and by_dataset["ATLAS T1"].dice["oaims"][-1] == 73.3
    assert paper.methods["oaims"] == "PI+MI" and ("oaims", "post") in paper.ordering


def test_it_covers_the_streams_and_strategies_the_report_compares() -> None:
    """Every kind of shift the paper reports has a stream of the same task and shift in the full suite, and
    every method and ordering pair names a strategy the suite runs."""
    paper = load_paper_numbers()
    config = load_bench_config(FULL)
    kinds = {(stream.task, stream.shift) for stream in config.streams}
    assert {(result.task, result.shift) for result in paper.results} <= kinds
    strategies = {spec.display_name for experiment in config.experiments for spec in experiment.strategies}
    assert set(paper.methods) <= strategies
    assert {label for pair in paper.ordering for label in pair} <= strategies
    budgets = {budget for experiment in config.experiments for budget in experiment.budgets}
    assert {result.budget for result in paper.results} <= budgets


def test_the_report_prints_the_numbers_of_the_file(tmp_path: Path) -> None:
    data = yaml.safe_load(PAPER_NUMBERS_YAML.read_text(encoding="utf-8"))
    data["results"][0]["dataset"] = "Imaginary set"
    data["results"][0]["dice"]["frozen"] = [12.3, 45.6, 78.9]
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    text = "\n".join(_paper_section([], {}, 10, load_paper_numbers(path)))
    assert "Imaginary set" in text and "12.3 / 45.6 / 78.9" in text
    assert "BraTS T1c" in text and "70.4 / 82.9 / 87.5" in text


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["results"][0].update(shift="planetary"), "results.0.shift"),
        (lambda d: d["results"][1]["dice"].update(magic=[1.0, 2.0, 3.0]), "not listed under methods"),
        (lambda d: d["results"][2]["dice"].update(frozen=[None, None, 0.88 * 1000]), "Dice must be in %"),
    ],
)
def test_a_wrong_file_is_refused_naming_the_field(tmp_path: Path, edit: object, message: str) -> None:
    data = yaml.safe_load(PAPER_NUMBERS_YAML.read_text(encoding="utf-8"))
    edit(data)  # type: ignore[operator]
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        load_paper_numbers(path)
    assert "paper.yaml" in str(error.value)
