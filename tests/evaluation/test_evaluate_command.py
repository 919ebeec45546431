"""``clickadapt evaluate`` and ``clickadapt demo`` end to end on tiny synthetic data with a tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from clickadapt import cli, paths
from clickadapt.evaluation.command import parse_seed_list
from clickadapt.evaluation.report import PER_IMAGE_CSV, PER_IMAGE_JSON, SUMMARY_JSON, SUMMARY_MD
from clickadapt.models.checkpoint import CheckpointMeta, save_checkpoint
from clickadapt.models.factory import ModelConfig, build_model
from clickadapt.tasks import BRAIN

SIZE = 32


def write_folder_dataset(root: Path, count: int) -> Path:
    """``images/*.png`` grey squares with a bright lesion and ``masks/*.png`` holding class indices."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        mask[5 + index : 15 + 2 * index, 8 : 18 + index] = 1
        image = (60 + 120 * mask + rng.integers(0, 30, (SIZE, SIZE))).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"case{index}.png")
        Image.fromarray(mask).save(root / "masks" / f"case{index}.png")
    return root


def write_tiny_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(widths=[4, 8, 16], affine_norm=True)
    model = build_model(config, BRAIN.input_channels, BRAIN.num_classes)
    meta = CheckpointMeta(task="brain", model=config, preprocessing={"size": SIZE, "click_sigma": 5.0})
    save_checkpoint(path, model, meta)
    return path


@pytest.fixture()
def experiment(tmp_path: Path) -> Path:
    data = write_folder_dataset(tmp_path / "lesions", 3)
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    folder = {"reader": "folder", "root": str(data), "task": "brain", "size": SIZE}
    config = {
        "model": str(checkpoint),
        "stream": folder,
        "source_validation": folder | {"limit": 2},
        "strategies": ["frozen", "post", "oaims"],
        "order_seeds": [0, 1, 2],
        "click_seeds": [0],
        "budget": 10,
        "cache_dir": None,
        "output": str(tmp_path / "from-yaml"),
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_evaluate_end_to_end_with_overrides(
    experiment: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "results"
    argv = [
        "evaluate",
        str(experiment),
        "--strategies",
        "frozen,post",
        "--order-seeds",
        "0,1",
        "--click-seeds",
        "3,4",
        "--budget",
        "2",
        "--limit",
        "2",
    ]
    status = cli.main([*argv, "--output", str(output), "--no-progress"])
    assert status == 0
    for name in (PER_IMAGE_CSV, PER_IMAGE_JSON, SUMMARY_JSON, SUMMARY_MD, "dice_vs_click.png", "stream_dice.png"):
        assert (output / name).is_file(), name
    assert not (tmp_path / "from-yaml").exists()
    summary = json.loads((output / SUMMARY_JSON).read_text())
    assert [entry["strategy"] for entry in summary["strategies"]] == ["frozen", "post"]
    frozen, post = summary["strategies"]
    # Frozen does not depend on the order: once per click seed; post once per (order seed, click seed).
    assert frozen["seeds"] == [3, 4] and frozen["order_seeds"] == [0, 0]
    assert post["seeds"] == [3, 4, 3, 4] and post["order_seeds"] == [0, 0, 1, 1]
    assert frozen["budget"] == 2 and frozen["images"] == [2, 2]  # --limit 2
    assert frozen["final_versions"] == [0, 0]
    assert min(post["final_versions"]) >= 2  # PI updates once or more per finished image
    lesion = frozen["regions"]["lesion"]
    assert set(lesion) >= {"dice@1", "dice@2", "noc@85", "failures@85", "auc", "forgetting@2"}
    assert lesion["forgetting@2"]["per_seed"] == [0.0, 0.0]  # a frozen model forgets nothing
    assert "forgetting@2" in post["regions"]["lesion"]
    resolved = yaml.safe_load((output / "config.yaml").read_text())
    assert resolved["budget"] == 2 and resolved["order_seeds"] == [0, 1] and resolved["click_seeds"] == [3, 4]
    assert "seeds" not in resolved and len(resolved["model_sha256"]) == 64
    runs = json.loads((output / PER_IMAGE_JSON).read_text())["runs"]
    assert [(run["strategy"], run["order_seed"], run["click_seed"], len(run["images"])) for run in runs] == [
        ("frozen", 0, 3, 2),
        ("frozen", 0, 4, 2),
        ("post", 0, 3, 2),
        ("post", 0, 4, 2),
        ("post", 1, 3, 2),
        ("post", 1, 4, 2),
    ]
    # The same click seed gives the same clicks whatever the order: post's first image in each order is
    # clicked like that image in the other order (paired by image and click seed).
    by_run = {(run["strategy"], run["order_seed"], run["click_seed"]): run for run in runs}
    for seed in (3, 4):
        clicks = [
            {image["key"]: image["clicks"] for image in by_run[("post", order, seed)]["images"]} for order in (0, 1)
        ]
        frozen_clicks = {image["key"]: image["clicks"] for image in by_run[("frozen", 0, seed)]["images"]}
        assert set(clicks[0]) == set(clicks[1]) == set(frozen_clicks)
        assert all(clicks[0][key][0] == frozen_clicks[key][0] for key in frozen_clicks)  # the first click
    printed = capsys.readouterr().out
    assert "## lesion" in printed and "| post |" in printed and str(output) in printed


def test_evaluate_reports_bad_input_without_traceback(
    experiment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["evaluate", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml does not exist" in capsys.readouterr().err
    assert cli.main(["evaluate", str(experiment), "--strategies", "frozen,nope"]) == 2
    assert "unknown strategy 'nope'" in capsys.readouterr().err
    assert cli.main(["evaluate", str(experiment), "--order-seeds", "0,x"]) == 2
    assert "--order-seeds: 'x' is not an integer" in capsys.readouterr().err
    assert cli.main(["evaluate", str(experiment), "--seeds", "0,1"]) == 2
    assert "use --order-seeds 0,1 --click-seeds 0" in capsys.readouterr().err
    monkeypatch.setattr(paths, "shipped_model_path", lambda task: tmp_path / f"missing-{task}.pt")
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs")  # no freshly trained model either
    config = yaml.safe_load(experiment.read_text()) | {"model": "brain"}
    experiment.write_text(yaml.safe_dump(config))
    assert cli.main(["evaluate", str(experiment)]) == 2
    error = capsys.readouterr().err
    assert "missing-brain.pt does not exist" in error and "clickadapt train configs/train_brain.yaml" in error


def test_parse_seed_list() -> None:
    assert parse_seed_list(" 0, 1,2 ") == [0, 1, 2]
    with pytest.raises(ValueError, match="--order-seeds"):
        parse_seed_list(",")


def test_demo_without_shipped_model_says_how_to_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(paths, "shipped_model_path", lambda task: tmp_path / f"{task}.pt")
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs")
    assert cli.main(["demo", "--output", str(tmp_path / "demo")]) == 2
    assert "clickadapt train configs/train_brain.yaml" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_on_built_in_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "brain.pt")
    monkeypatch.setattr(paths, "shipped_model_path", lambda task: checkpoint)
    output = tmp_path / "demo"
    argv = ["demo", "--output", str(output), "--limit", "3", "--budget", "2", "--no-progress"]
    assert cli.main(argv) == 0
    summary = json.loads((output / SUMMARY_JSON).read_text())
    assert [entry["strategy"] for entry in summary["strategies"]] == ["frozen", "oaims"]
    assert summary["strategies"][0]["images"] == [3]
    printed = capsys.readouterr().out
    assert "| oaims |" in printed and str(output) in printed
