"""Helpers of the server tests: a tiny random brain checkpoint, demo-like synthetic images, store snapshots."""

from __future__ import annotations

import io
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image

from clickadapt.data.sample import Sample
from clickadapt.models.checkpoint import CheckpointMeta, save_checkpoint
from clickadapt.models.factory import ModelConfig
from clickadapt.models.unet import ReferenceUNet
from clickadapt.tasks import BRAIN, FUNDUS

IMAGE_SIZE = 48
TINY_WIDTHS = [4, 8, 16]


def write_tiny_checkpoint(
    path: Path,
    size: int = IMAGE_SIZE,
    seed: int = 0,
    clip_percentiles: tuple[float, float] = (0.5, 99.5),
    click_sigma: float = 5.0,
) -> Path:
    """A random brain ``ReferenceUNet(widths=[4, 8, 16], affine_norm=True)`` saved as a checkpoint (its volume
    slices clipped to ``clip_percentiles`` of the brain values; its click maps of σ ``click_sigma``)."""
    torch.manual_seed(seed)
    model = ReferenceUNet(BRAIN.input_channels, BRAIN.num_classes, TINY_WIDTHS, affine_norm=True)
    meta = CheckpointMeta(
        task="brain",
        model=ModelConfig(widths=TINY_WIDTHS, affine_norm=True),
        preprocessing={"size": size, "click_sigma": click_sigma, "clip_percentiles": clip_percentiles},
        notes="tiny random model for the server tests",
    )
    save_checkpoint(path, model, meta)
    return path


def write_tiny_fundus_checkpoint(path: Path, size: int = IMAGE_SIZE, seed: int = 0) -> Path:
    """A random fundus ``ReferenceUNet(widths=[4, 8, 16], affine_norm=True)`` (RGB in, 3 classes) saved as a
    checkpoint: its images are *resized* onto the ``size × size`` grid, unlike the brain model's."""
    torch.manual_seed(seed)
    model = ReferenceUNet(FUNDUS.input_channels, FUNDUS.num_classes, TINY_WIDTHS, affine_norm=True)
    meta = CheckpointMeta(
        task="fundus",
        model=ModelConfig(widths=TINY_WIDTHS, affine_norm=True),
        preprocessing={"size": size, "click_sigma": 5.0},
        notes="tiny random fundus model for the server tests",
    )
    save_checkpoint(path, model, meta)
    return path


def synthetic_fundus_png(height: int = 150, width: int = 210) -> bytes:
    """A fundus-like RGB photograph as PNG bytes: a reddish disc with a bright yellow optic disc off-centre."""
    rows, cols = np.mgrid[:height, :width]
    eye = (rows - height / 2) ** 2 / (0.48 * height) ** 2 + (cols - width / 2) ** 2 / (0.48 * width) ** 2 < 1
    optic = (rows - 0.45 * height) ** 2 + (cols - 0.6 * width) ** 2 < (0.15 * height) ** 2
    picture = np.zeros((height, width, 3), np.uint8)
    picture[eye] = (150, 60, 30)
    picture[optic] = (250, 220, 120)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_brain_slice(size: int = IMAGE_SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A demo-like grey slice: a textured disc ("brain") on a zero background with a bright blob ("lesion").

    Returns:
        ``float32 (size, size)`` intensities and its ``int64`` lesion label.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    centre = size / 2
    brain = (rows - centre) ** 2 + (cols - centre) ** 2 < (0.42 * size) ** 2
    lesion_row, lesion_col = centre + rng.integers(-size // 8, size // 8 + 1, size=2)
    lesion = (rows - lesion_row) ** 2 + (cols - lesion_col) ** 2 < (0.12 * size) ** 2
    image = np.where(brain, 100.0 + 10.0 * rng.standard_normal((size, size)), 0.0)
    image = np.where(lesion & brain, image + 80.0, image).astype(np.float32)
    return image, (lesion & brain).astype(np.int64)


def synthetic_samples(count: int = 3, size: int = IMAGE_SIZE) -> list[Sample]:
    """Preprocessed synthetic brain samples like the built-in demo slices."""
    from clickadapt.data.preprocess import preprocess_brain_slice

    samples = []
    for index in range(count):
        image, label = synthetic_brain_slice(size, seed=index)
        samples.append(
            Sample(
                image=preprocess_brain_slice(image, image > 0, size),
                label=label,
                task="brain",
                dataset="synthetic",
                domain="T1",
                patient=f"case{index}",
                slice_index=index,
                source=f"synthetic-{index}",
            )
        )
    return samples


def store_snapshot(store: Path) -> dict[str, Any]:
    """Everything stored: every table's rows (BLOBs hashed) and the files under the store (but the WAL)."""
    connection = sqlite3.connect(store / "clickadapt.sqlite")
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        content: dict[str, Any] = {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() for table in tables
        }
    finally:
        connection.close()
    content["files"] = sorted(
        (path.relative_to(store).as_posix(), path.stat().st_size)
        for path in store.rglob("*")
        if path.is_file() and not path.name.startswith("clickadapt.sqlite")
    )
    return content


AppFactory = Callable[..., TestClient]


def dicom_bytes(size: int = IMAGE_SIZE, frames: int = 1) -> bytes:
    """A small synthetic MR DICOM file (16-bit, MONOCHROME2; several frames make a volume)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = MRImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "MR"
    dataset.Rows = size
    dataset.Columns = size
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    pixels = np.stack([synthetic_brain_slice(size, seed)[0] for seed in range(frames)]).astype(np.uint16)
    if frames > 1:
        dataset.NumberOfFrames = frames
    dataset.PixelData = (pixels if frames > 1 else pixels[0]).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class ServerProcess:
    """The real server (``python -m clickadapt.server``) in a subprocess on a free loopback port.

    Args:
        arguments: Options of ``clickadapt serve`` (``--port 0`` is added).
        start_timeout: Seconds to wait for the address line.
    """

    def __init__(self, arguments: list[str], start_timeout: float = 120.0) -> None:
        self.arguments = arguments
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.url = ""

    def start(self) -> str:
        """Start the server and return its address (``http://127.0.0.1:<port>/``)."""
        command = [sys.executable, "-m", "clickadapt.server", "--port", "0", *self.arguments]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump(stream: Any) -> None:
            for line in stream:
                self.output.append(line)
                lines.put(line)

        threading.Thread(target=pump, args=(self.process.stdout,), daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            match = re.search(r"open (http://\S+)", line)
            if match:
                self.url = match.group(1)
                return self.url
        self.stop()
        raise RuntimeError("server did not start:\n" + "".join(self.output))

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to clean up (a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop politely (SIGTERM), then kill."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
