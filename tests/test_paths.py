"""The one model-spec resolver behind every ``--model``."""

from __future__ import annotations

from pathlib import Path

import pytest

from clickadapt import paths
from clickadapt.paths import resolve_model_spec


def test_task_names_mean_the_shipped_model_then_a_freshly_trained_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paths, "shipped_model_path", lambda task: tmp_path / "shipped" / f"{task}.pt")
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs")
    with pytest.raises(FileNotFoundError, match=r"shipped brain model has not been built yet.*train_brain\.yaml"):
        resolve_model_spec("brain")
    trained = tmp_path / "runs" / "brain" / "best.pt"
    trained.parent.mkdir(parents=True)
    trained.write_bytes(b"x")
    assert resolve_model_spec("brain") == trained
    shipped = tmp_path / "shipped" / "brain.pt"
    shipped.parent.mkdir()
    shipped.write_bytes(b"x")
    assert resolve_model_spec("brain") == shipped  # the shipped model wins


def test_anything_else_is_a_checkpoint_path(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    with pytest.raises(FileNotFoundError, match=r"model checkpoint .*model\.pt does not exist"):
        resolve_model_spec(checkpoint)
    checkpoint.write_bytes(b"x")
    assert resolve_model_spec(str(checkpoint)) == checkpoint
