"""Raw files of an earlier protocol: ``--report-only`` refuses them with a clear error, without a traceback."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from bench.harness.cli import main as bench_main
from bench.harness.constants import BENCH_JSON, RAW_CSV, RUNS_CSV
from bench.harness.raw import RAW_COLUMNS, RUNS_COLUMNS, OutdatedRawFilesError, read_raw
from tiny_suite import bench_mapping

OLD_ONLY = ("seed",)
"""Before issue 15 a single ``seed`` column stood for the order and the clicks."""
NEW_SINCE_ISSUE_15 = ("click_seed", "first_before_update")


def write_old_protocol_files(folder: Path) -> Path:
    """``raw.csv`` / ``runs.csv`` with the header of the pre-issue-15 protocol and one data row, and a bench.json."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, columns in ((RAW_CSV, RAW_COLUMNS), (RUNS_CSV, RUNS_COLUMNS)):
        header = [column for column in columns if column not in NEW_SINCE_ISSUE_15] + list(OLD_ONLY)
        with (folder / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerow(["x"] * len(header))
    (folder / BENCH_JSON).write_text(json.dumps({"streams": [], "format": 1}), encoding="utf-8")
    return folder


def test_read_raw_names_the_file_the_missing_columns_and_the_protocol(tmp_path: Path) -> None:
    folder = write_old_protocol_files(tmp_path / "old")
    with pytest.raises(OutdatedRawFilesError) as error:
        read_raw(folder)
    message = str(error.value)
    assert str(folder / RAW_CSV) in message
    assert "missing columns ['click_seed', 'first_before_update']" in message
    assert "predates the current protocol" in message and "python -m bench CONFIG" in message


def test_a_csv_that_is_no_bench_file_is_named_as_such(tmp_path: Path) -> None:
    folder = write_old_protocol_files(tmp_path / "other")
    (folder / RAW_CSV).write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"raw\.csv is not a bench raw file: missing columns \['stream'") as error:
        read_raw(folder)
    assert not isinstance(error.value, OutdatedRawFilesError)


def test_report_only_on_old_files_exits_2_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mapping = bench_mapping(tmp_path)
    mapping["output"] = str(write_old_protocol_files(tmp_path / "results"))
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    assert bench_main([str(config), "--report-only"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("python -m bench: error: ")
    assert "raw.csv predates the current protocol" in captured.err and "Traceback" not in captured.err
    assert "missing columns ['click_seed', 'first_before_update']" in captured.err
