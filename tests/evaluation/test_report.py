"""Report files from constructed results: hand-checked summary values and regeneration from the raw files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clickadapt.clicks.click import Click
from clickadapt.evaluation.plots import moving_average
from clickadapt.evaluation.report import (
    PER_IMAGE_CSV,
    PER_IMAGE_JSON,
    SUMMARY_JSON,
    SUMMARY_MD,
    read_results,
    read_results_csv,
    reported_clicks,
    summarise,
    write_report,
    write_results,
)
from clickadapt.evaluation.stream import ImageRecord, StreamResult

BUDGET = 5


def image(position: int, disc: list[float], cup: list[float], clicks_made: int = BUDGET) -> ImageRecord:
    return ImageRecord(
        position=position,
        key=f"synthetic/r1/img{position}",
        clicks=[Click(position + i, i, 1 + i % 2) for i in range(clicks_made)],
        dice={"disc": disc, "cup": cup},
        forward_s=[0.01 * (i + 1) for i in range(clicks_made)],
        update_s=[0.0] + [0.02] * (clicks_made - 1),
        finish_s=0.1 + position,
        versions=list(range(clicks_made)),
        version_after=clicks_made,
    )


def run(strategy: str, seed: int, offset: float, forgetting: bool = True) -> StreamResult:
    images = [
        image(0, [0.5 + offset, 0.6, 0.7, 0.8, 0.9], [0.2, 0.4, 0.6, 0.8, 0.86]),
        image(1, [0.9, 0.9, 0.9, 0.9, 0.9], [0.1 + offset, 0.1, 0.1, 0.1, 0.1], clicks_made=2),
    ]
    return StreamResult(
        strategy=strategy,
        strategy_name="mid" if strategy != "frozen" else "frozen",
        overrides={"click_loss": False} if strategy == "mid-noccg" else {},
        task="fundus",
        regions=["disc", "cup"],
        user="oaims",
        budget=BUDGET,
        order_seed=seed,
        click_seed=seed,
        images=images,
        validation_before={"disc": [0.8] * BUDGET, "cup": [0.7] * BUDGET} if forgetting else None,
        validation_after={"disc": [0.75] * BUDGET, "cup": [0.7] * BUDGET} if forgetting else None,
    )


@pytest.fixture()
def results() -> list[StreamResult]:
    return [run("frozen", 0, 0.0), run("frozen", 1, 0.0), run("mid-noccg", 0, 0.0), run("mid-noccg", 1, 0.1)]


def test_summary_values_match_hand_computation(results: list[StreamResult]) -> None:
    summary = summarise(results)
    assert [entry["strategy"] for entry in summary["strategies"]] == ["frozen", "mid-noccg"]
    mid = summary["strategies"][1]
    disc = mid["regions"]["disc"]
    # Dice@1 per seed: mean(0.5, 0.9) = 0.7 and mean(0.6, 0.9) = 0.75.
    assert disc["dice@1"]["per_seed"] == pytest.approx([0.7, 0.75])
    assert disc["dice@1"]["mean"] == pytest.approx(0.725)
    assert disc["dice@1"]["sd"] == pytest.approx(np.std([0.7, 0.75], ddof=1))
    assert disc["dice@5"]["mean"] == pytest.approx(0.9)
    # NoC@85 on disc: image 0 reaches 0.9 at click 5, image 1 at click 1 → 3.0; no failure.
    assert disc["noc@85"]["mean"] == pytest.approx(3.0)
    assert disc["failures@85"]["mean"] == 0
    cup = mid["regions"]["cup"]
    # cup: image 0 reaches 0.86 at click 5; image 1 never → counts as the budget (5): NoC (5 + 5) / 2.
    assert cup["noc@85"]["mean"] == pytest.approx(5.0)
    assert cup["failures@85"]["mean"] == 1
    # AUC of image 0's disc curve (seed 0): trapezoids 0.55+0.65+0.75+0.85 = 2.8 over 4 = 0.7; image 1 0.9.
    assert disc["auc"]["per_seed"][0] == pytest.approx((0.7 + 0.9) / 2)
    assert disc["forgetting@5"]["mean"] == pytest.approx(0.05)
    assert cup["forgetting@1"]["mean"] == pytest.approx(0.0)
    # Times: forward per click over both seeds' clicks made (5 + 2 per seed).
    forward = [0.01, 0.02, 0.03, 0.04, 0.05, 0.01, 0.02] * 2
    assert mid["time"]["forward_s_median"] == pytest.approx(float(np.median(forward)))
    assert mid["time"]["finish_s_median"] == pytest.approx(np.median([0.1, 1.1, 0.1, 1.1]))
    assert mid["overrides"] == {"click_loss": False}


def test_reported_clicks() -> None:
    assert reported_clicks(10) == [1, 5, 10]
    assert reported_clicks(3) == [1, 3]
    assert reported_clicks(1) == [1]


def test_write_results_writes_every_file_and_csv_round_trips(results: list[StreamResult], tmp_path: Path) -> None:
    paths = write_results(results, tmp_path)
    names = {path.name for path in paths}
    assert {PER_IMAGE_JSON, PER_IMAGE_CSV, SUMMARY_JSON, SUMMARY_MD, "dice_vs_click.png", "stream_dice.png"} <= names
    assert all(path.stat().st_size > 0 for path in paths)
    markdown = (tmp_path / SUMMARY_MD).read_text()
    assert "## disc" in markdown and "## cup" in markdown and "mid-noccg" in markdown
    rows = (tmp_path / PER_IMAGE_CSV).read_text().splitlines()
    assert len(rows) == 1 + 4 * 2 * BUDGET * 2  # header + runs × images × clicks × regions
    from_csv = read_results_csv(tmp_path / PER_IMAGE_CSV)
    for original, restored in zip(results, from_csv, strict=True):
        expected = original.to_dict() | {"validation_before": None, "validation_after": None}
        assert restored.to_dict() == expected
    assert [result.to_dict() for result in read_results(tmp_path)] == [result.to_dict() for result in results]


def test_report_regenerates_from_raw_files_alone(results: list[StreamResult], tmp_path: Path) -> None:
    write_results(results, tmp_path)
    summary = (tmp_path / SUMMARY_JSON).read_text()
    markdown = (tmp_path / SUMMARY_MD).read_text()
    for name in (SUMMARY_JSON, SUMMARY_MD, "dice_vs_click.png", "stream_dice.png"):
        (tmp_path / name).unlink()
    write_report(tmp_path)
    assert (tmp_path / SUMMARY_JSON).read_text() == summary
    assert (tmp_path / SUMMARY_MD).read_text() == markdown
    assert (tmp_path / "stream_dice.png").is_file()
    # From the CSV alone: everything but the forgetting measurement.
    (tmp_path / PER_IMAGE_JSON).unlink()
    from_csv = summarise(read_results(tmp_path))
    original = json.loads(summary)
    for before, after in zip(original["strategies"], from_csv["strategies"], strict=True):
        for region in ("disc", "cup"):
            for metric in ("dice@1", "dice@5", "noc@85", "failures@90", "auc"):
                assert after["regions"][region][metric] == before["regions"][region][metric]
            assert "forgetting@5" not in after["regions"][region]


def test_read_results_errors_name_the_folder_and_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="per_image"):
        read_results(tmp_path)
    (tmp_path / PER_IMAGE_JSON).write_text('{"format": 99, "runs": []}')
    with pytest.raises(ValueError, match=r"per_image\.json"):
        read_results(tmp_path)


def test_summary_rejects_runs_with_different_budgets(results: list[StreamResult]) -> None:
    other = run("frozen", 2, 0.0)
    other.budget = 4
    other.images = []
    with pytest.raises(ValueError, match="frozen"):
        summarise([*results, other])


def test_moving_average_trailing_window() -> None:
    assert moving_average(np.array([1.0, 2.0, 3.0, 4.0]), 2) == pytest.approx([1.0, 1.5, 2.5, 3.5])
    assert moving_average(np.array([1.0, 3.0]), 1) == pytest.approx([1.0, 3.0])
    with pytest.raises(ValueError, match="window"):
        moving_average(np.array([1.0]), 0)
