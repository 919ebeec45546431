"""Self-describing, checksummed checkpoints written atomically.

A checkpoint file holds the weights and everything needed to rebuild a ready model from the file
alone: the architecture, the task (classes), the preprocessing, the training configuration, a digest
of the training data, validation metrics and a model version with its parent (for rollback). A
SHA-256 of the serialised weights is stored beside them and verified on load, so a corrupted file is
refused with a clear message instead of silently producing a broken model.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator
from torch import nn

from clickadapt.clicks.encoding import DEFAULT_CLICK_SIGMA
from clickadapt.data.preprocess import DEFAULT_CLIP_PERCENTILES, default_size
from clickadapt.models.factory import ModelConfig, build_model
from clickadapt.tasks import TaskSpec, get_task

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupted or of an unknown format."""


class CheckpointPreprocessing(BaseModel):
    """What a model expects of its input, as stored in its checkpoint; read by everyone who feeds it.

    Written by the trainer (:class:`~clickadapt.data.preprocess.PreprocessingConfig` of its training data,
    plus the reader, modality and click σ); older checkpoints stored a subset, so every field has a default,
    and keys unknown here are kept (and written back) as they are.

    Attributes:
        task: The task the preprocessing is for (``None`` in older checkpoints: the checkpoint's task).
        size: Side of the preprocessed image the model was trained on (brain: centre pad or crop, fundus:
            resize); ``None`` = the task's default (:func:`~clickadapt.data.preprocess.default_size`). The
            network may run on a smaller grid internally (``ModelConfig.input_size``); that is its own business.
        clip_percentiles: Brain normalisation: clipping range in percentiles of the in-brain values, then a
            z-score inside the brain. Fundus images are z-scored per channel.
        brain_mask: Brain normalisation: what counts as brain without a mask.
        resize: ``"pad-crop"`` (brain) or ``"bilinear"`` (fundus); ``None`` = the task's way.
        reader: Data reader of the training data (e.g. ``"lgg"``, ``"rimone-dl"``).
        modality: MRI sequence of the training data (e.g. ``"FLAIR"``), ``None`` for photographs.
        click_sigma: σ in pixels of the Gaussian click maps the model was trained with.
    """

    model_config = ConfigDict(extra="allow")

    task: Literal["fundus", "brain"] | None = None
    size: int | None = Field(default=None, gt=0)
    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES
    brain_mask: Literal["nonzero"] = "nonzero"
    resize: Literal["bilinear", "pad-crop"] | None = None
    reader: str | None = None
    modality: str | None = None
    click_sigma: PositiveFloat = DEFAULT_CLICK_SIGMA

    @field_validator("click_sigma", mode="before")
    @classmethod
    def _default_sigma(cls, value: Any) -> Any:
        return DEFAULT_CLICK_SIGMA if value is None else value

    def image_size(self, task: str) -> int:
        """Side of the preprocessed image for a model of ``task``: :attr:`size`, else the task's default."""
        return self.size if self.size is not None else default_size(task)


class CheckpointMeta(BaseModel):
    """Everything about a model except its weights.

    Attributes:
        task: Task name (classes and image channels follow from it).
        model: Architecture.
        preprocessing: Preprocessing the model expects (image size, normalisation, click σ, …).
        training: The training configuration that produced the weights.
        data_digest: SHA-256 over the identifiers of the training samples.
        metrics: Validation metrics, e.g. ``{"dice@1": 0.8, ...}``.
        version: Model version number (0 = the source model, +1 per accepted update).
        parent_sha256: Weights checksum of the version this one was adapted from, if any.
        created: ISO-8601 UTC time of writing.
        notes: Free text (model card pointer, strategy that produced an adapted version, …).
    """

    task: str
    model: ModelConfig
    preprocessing: CheckpointPreprocessing = Field(default_factory=CheckpointPreprocessing)
    training: dict[str, Any] = Field(default_factory=dict)
    data_digest: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    version: int = 0
    parent_sha256: str | None = None
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    notes: str = ""


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, ready for inference.

    Attributes:
        model: The network in eval mode.
        task: Its task.
        meta: The checkpoint's metadata.
        sha256: Checksum of the weights as stored in the file.
        path: The file it came from.
    """

    model: nn.Module
    task: TaskSpec
    meta: CheckpointMeta
    sha256: str
    path: Path


def weights_digest(state_dict: dict[str, torch.Tensor]) -> tuple[bytes, str]:
    """Serialise a state dict and return the bytes with their SHA-256 hex digest."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
    payload = buffer.getvalue()
    return payload, hashlib.sha256(payload).hexdigest()


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that a crash leaves either the old file or the new one.

    Writes a temporary file in the same folder, fsyncs it, renames it over ``path`` and fsyncs the
    folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> str:
    """Write a checkpoint atomically and return the SHA-256 of its weights.

    Args:
        path: Destination file (``.pt``).
        model: The network whose ``state_dict`` is stored.
        meta: Its metadata.
    """
    weights, digest = weights_digest(model.state_dict())
    record = {"format": CHECKPOINT_FORMAT, "meta": meta.model_dump(mode="json"), "sha256": digest, "weights": weights}
    buffer = io.BytesIO()
    torch.save(record, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return digest


def read_checkpoint_meta(path: str | Path) -> tuple[CheckpointMeta, str, bytes]:
    """Read and verify a checkpoint file; return its metadata, checksum and serialised weights.

    Raises:
        CheckpointError: naming the file, when it is missing, unreadable, of another format, or its
            weights do not match the stored checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or not a clickadapt checkpoint): {error}"
        ) from error
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a clickadapt checkpoint of format {CHECKPOINT_FORMAT}")
    weights = record["weights"]
    digest = hashlib.sha256(weights).hexdigest()
    if digest != record["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} is corrupted: weights checksum {digest[:12]}… != stored {str(record['sha256'])[:12]}…"
        )
    return CheckpointMeta.model_validate(record["meta"]), digest, weights


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a ready model (eval mode) from a checkpoint file alone.

    Raises:
        CheckpointError: see :func:`read_checkpoint_meta`.
    """
    meta, digest, weights = read_checkpoint_meta(path)
    task = get_task(meta.task)
    model = build_model(meta.model, task.input_channels, task.num_classes)
    state_dict = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the stored architecture: {error}") from error
    model.to(device).eval()
    return LoadedModel(model=model, task=task, meta=meta, sha256=digest, path=Path(path))
