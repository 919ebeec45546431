"""Pre-training on real files: the loss falls, runs are deterministic, resume continues exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from clickadapt.data.registry import DatasetConfig
from clickadapt.models.checkpoint import load_checkpoint
from clickadapt.models.factory import ModelConfig
from clickadapt.training.config import OptimisationConfig, TrainingConfig, ValidationConfig, load_training_config
from clickadapt.training.distributed import init_distributed
from clickadapt.training.trainer import RESUME_FILE, train

pytestmark = pytest.mark.realdata


def tiny_config(data_root: Path, output: Path, epochs: int, augment: bool = False) -> TrainingConfig:
    """Four RIM-ONE r2 training images at 64×64 and a network of a few thousand parameters."""
    data = DatasetConfig(
        reader="rimone-dl", root=data_root / "fundus" / "rimone-dl", split="train", domains=["r2"], size=64, limit=4
    )
    return TrainingConfig(
        task="fundus",
        model=ModelConfig(widths=[4, 8, 16], affine_norm=True),
        train_data=[data],
        validation_data=[data.model_copy(update={"limit": 2})],
        optimisation=OptimisationConfig(learning_rate=5e-3, batch_size=4, epochs=epochs, lr_step_epochs=100),
        augmentation={"enabled": augment},
        validation=ValidationConfig(every_epochs=max(epochs, 1), budget=3, selection_click=3),
        output=output,
        seed=3,
        num_threads=1,
    )


def test_loss_falls_on_real_fundus_images(data_root: Path, tmp_path: Path) -> None:
    result = train(tiny_config(data_root, tmp_path / "run", epochs=12), progress=False)
    losses = [record["loss"] for record in result.history]
    assert len(losses) == 12
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    loaded = load_checkpoint(result.best_checkpoint)
    assert loaded.task.name == "fundus"
    assert "dice@1/disc" in loaded.meta.metrics and "dice@1/cup" in loaded.meta.metrics
    assert loaded.meta.data_digest and loaded.meta.training["seed"] == 3


def test_training_is_deterministic_and_resume_continues_exactly(data_root: Path, tmp_path: Path) -> None:
    straight = train(tiny_config(data_root, tmp_path / "straight", epochs=2, augment=True), progress=False)
    train(tiny_config(data_root, tmp_path / "resumed", epochs=1, augment=True), progress=False)
    assert (tmp_path / "resumed" / RESUME_FILE).is_file()
    resumed = train(tiny_config(data_root, tmp_path / "resumed", epochs=2, augment=True), resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight" / "last.pt").model.state_dict()
    b = load_checkpoint(tmp_path / "resumed" / "last.pt").model.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert [r["loss"] for r in straight.history] == [r["loss"] for r in resumed.history]


def test_config_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"task": "fundus", "train_data": [], "optimisation": {"batch_size": "many"}}))
    with pytest.raises(ValueError, match=r"(?s)bad\.yaml.*batch_size"):
        load_training_config(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        load_training_config(tmp_path / "missing.yaml")


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(data_root: Path, tmp_path: Path) -> None:
    config = tiny_config(data_root, tmp_path / "ddp", epochs=2)
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "clickadapt.cli",
        "train",
        str(config_path),
        "--no-progress",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [0, 1]  # written once, by rank 0
    assert load_checkpoint(tmp_path / "ddp" / "best.pt").meta.training["epochs_completed"] == 2


def test_a_second_stage_starts_from_the_first_stages_weights(data_root: Path, tmp_path: Path) -> None:
    first = train(tiny_config(data_root, tmp_path / "stage1", epochs=1), progress=False)
    second = tiny_config(data_root, tmp_path / "stage2", epochs=1)
    second.init_checkpoint = first.best_checkpoint
    second.optimisation.learning_rate = 0.0  # the weights cannot move: stage 2 must hold stage 1's
    train(second, progress=False)
    a = load_checkpoint(first.best_checkpoint).model.state_dict()
    b = load_checkpoint(tmp_path / "stage2" / "last.pt").model.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    other = tiny_config(data_root, tmp_path / "stage2b", epochs=1)
    other.model = ModelConfig(widths=[4, 8], affine_norm=True)
    other.init_checkpoint = first.best_checkpoint
    with pytest.raises(ValueError, match=r"init_checkpoint .*best\.pt"):
        train(other, progress=False)


def test_a_stage_may_run_the_first_stages_network_at_another_input_size(data_root: Path, tmp_path: Path) -> None:
    first_config = tiny_config(data_root, tmp_path / "stage1", epochs=1)
    first_config.model = first_config.model.model_copy(update={"input_size": 16})
    first = train(first_config, progress=False)
    second = tiny_config(data_root, tmp_path / "stage2", epochs=1)
    assert second.model.input_size is None  # runs at the data's own size
    second.init_checkpoint = first.best_checkpoint
    second.optimisation.learning_rate = 0.0
    train(second, progress=False)
    a = load_checkpoint(first.best_checkpoint).model.network.state_dict()
    b = load_checkpoint(tmp_path / "stage2" / "last.pt").model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_device_choice_is_honoured_and_a_missing_gpu_is_named() -> None:
    assert init_distributed("cpu").device.type == "cpu"
    assert init_distributed("auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda', got 'tpu'"):
        init_distributed("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device 'cuda' asked for, but torch .* sees no CUDA GPU"):
            init_distributed("cuda")


def test_weight_average_is_what_is_validated_saved_and_resumed(data_root: Path, tmp_path: Path) -> None:
    def averaged_config(output: Path, epochs: int) -> TrainingConfig:
        config = tiny_config(data_root, output, epochs=epochs)
        config.optimisation.ema_decay = 0.9
        return config

    straight = train(averaged_config(tmp_path / "straight", epochs=2), progress=False)
    state = torch.load(tmp_path / "straight" / RESUME_FILE, weights_only=False)
    trained = state["model"]
    averaged = {name.removeprefix("module."): value for name, value in state["averaged_model"].items()}
    saved = load_checkpoint(tmp_path / "straight" / "last.pt").model.state_dict()
    # last.pt holds the average, which differs from the trained weights
    assert all(torch.equal(saved[name], averaged[name]) for name in saved)
    assert any(not torch.equal(saved[name], trained[name]) for name in saved)
    # the last validation also reports the trained weights, so the average's effect is visible
    assert "trained_weights/selection" in straight.history[-1]
    assert straight.history[-1]["trained_weights/selection"] != straight.history[-1]["selection"]
    # resuming restores the average too: 1 + 1 epochs end where 2 do
    train(averaged_config(tmp_path / "resumed", epochs=1), progress=False)
    train(averaged_config(tmp_path / "resumed", epochs=2), resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt").model.state_dict()
    assert all(torch.equal(saved[name], resumed[name]) for name in saved)
    # a resume state written without an average cannot silently continue with a fresh one
    train(tiny_config(data_root, tmp_path / "plain", epochs=1), progress=False)
    with pytest.raises(ValueError, match=r"resume\.pt was written without optimisation\.ema_decay"):
        train(averaged_config(tmp_path / "plain", epochs=2), resume=True, progress=False)
