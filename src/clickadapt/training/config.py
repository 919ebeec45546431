"""Typed configuration of source pre-training (method.md §6), read from YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from clickadapt.data.registry import DatasetConfig
from clickadapt.losses.combined import LossConfig
from clickadapt.models.factory import ModelConfig


class OptimisationConfig(BaseModel):
    """Adam with step decay, as in the reference (lr 5e-4, batch 8)."""

    learning_rate: float = 5e-4
    batch_size: int = 8
    epochs: int = 100
    lr_step_epochs: int = 40
    lr_gamma: float = 0.5
    max_minutes: float | None = Field(None, description="stop after this wall time (checked each step)")
    max_steps_per_epoch: int | None = Field(None, description="cap on steps per epoch (tests, smoke runs)")
    ema_decay: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description=(
            "keep an exponential moving average of the weights (decay per step, e.g. 0.998); validation, "
            "best.pt and last.pt then hold the averaged weights"
        ),
    )


class ClickConfig(BaseModel):
    """Click encoding and the iterative training-time click simulation."""

    sigma: float = 5.0
    max_clicks: int = 10
    split_area: int = 150
    largest_error_share: float = Field(
        0.0, ge=0.0, le=1.0, description="share of correction clicks on the largest error left (as test-time users)"
    )
    iterative_clicks: int = Field(
        0,
        ge=0,
        description="last clicks of each budget placed one per round on the largest error of the prediction so far",
    )


class AugmentationConfig(BaseModel):
    """Geometric and intensity augmentation (colour only for fundus), via MONAI transforms."""

    enabled: bool = True
    flip_probability: float = 0.5
    affine_probability: float = 0.5
    rotate_degrees: float = 15.0
    scale_range: float = 0.15
    intensity_probability: float = 0.5
    noise_std: float = 0.05
    gamma_range: tuple[float, float] = (0.7, 1.5)


class ValidationConfig(BaseModel):
    """Model selection with a simulated user: Dice after 1, 5 and 10 clicks."""

    every_epochs: int = 5
    budget: int = 10
    user: Literal["oaims", "center", "deepest"] = "oaims"
    seed: int = 0
    selection_click: int = 5


class TrainingConfig(BaseModel):
    """A whole pre-training experiment.

    Attributes:
        task: ``"fundus"`` or ``"brain"``.
        model: Architecture.
        train_data: Datasets concatenated into the training set.
        validation_data: Datasets concatenated into the validation set (disjoint patients).
        output: Folder for ``best.pt``, ``last.pt``, the resume state and the log.
        seed: Seed of everything random (weights, order, augmentation, clicks).
        num_threads: Torch intra-op threads (None = torch's default).
        init_checkpoint: Start from these weights (a checkpoint of the same architecture, e.g. the
            ``best.pt`` of an earlier stage) instead of a random initialisation. Its ``input_size`` may
            differ from this config's (the grid the network runs at has no weights).
        device: ``auto`` (a GPU when torch sees one, else the CPU), ``cpu`` or ``cuda`` (an error
            where there is no GPU). Validation runs on the same device.
    """

    task: Literal["fundus", "brain"]
    model: ModelConfig = Field(default_factory=ModelConfig)
    train_data: list[DatasetConfig]
    validation_data: list[DatasetConfig] = Field(default_factory=list)
    optimisation: OptimisationConfig = Field(default_factory=OptimisationConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    clicks: ClickConfig = Field(default_factory=ClickConfig)
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    output: Path = Path("runs/train")
    seed: int = 0
    num_threads: int | None = None
    init_checkpoint: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"


def load_training_config(path: str | Path) -> TrainingConfig:
    """Read a training YAML file.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file and the offending field when the content is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"training config {path} is not valid YAML: {error}") from error
    try:
        return TrainingConfig.model_validate(raw)
    except ValidationError as error:
        raise ValueError(f"training config {path} is invalid:\n{error}") from error
