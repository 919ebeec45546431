"""Checkpoint faults: a writer killed mid-write, corrupted and foreign files (extends test_models.py)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from clickadapt.models.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint, save_checkpoint
from clickadapt.models.factory import ModelConfig, build_model
from clickadapt.tasks import BRAIN

# The child process saves a large checkpoint over an existing one and stops, for ever, half-way through
# writing the temporary file (after fsyncing that half), so the parent can SIGKILL it exactly there.
KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import torch
    torch.set_num_threads(1)
    from clickadapt.models.checkpoint import CheckpointMeta, save_checkpoint
    from clickadapt.models.factory import ModelConfig, build_model

    real_fdopen = os.fdopen

    class HalfThenHang:
        def __init__(self, handle):
            self.handle = handle
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)
        def write(self, payload):
            half = len(payload) // 2
            self.handle.write(payload[:half])
            self.handle.flush()
            os.fsync(self.handle.fileno())
            print("HALF", len(payload), flush=True)
            time.sleep(120)
            self.handle.write(payload[half:])
        def flush(self):
            self.handle.flush()
        def fileno(self):
            return self.handle.fileno()

    os.fdopen = lambda fd, mode="r", *args, **kwargs: HalfThenHang(real_fdopen(fd, mode, *args, **kwargs))
    config = ModelConfig(widths=[16, 32, 64, 128, 256], affine_norm=True)
    model = build_model(config, 3, 2)
    save_checkpoint(sys.argv[1], model, CheckpointMeta(task="brain", model=config, version=2))
    """
)


def small_checkpoint(path: Path, version: int = 1) -> str:
    config = ModelConfig(widths=[4, 8], affine_norm=True)
    model = build_model(config, BRAIN.input_channels, BRAIN.num_classes)
    return save_checkpoint(path, model, CheckpointMeta(task="brain", model=config, version=version))


@pytest.mark.slow
def test_writer_killed_mid_write_leaves_the_previous_version_loadable(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    previous_sha = small_checkpoint(path)
    previous_bytes = path.read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = child.stdout.readline() if child.stdout is not None else ""
        assert line.startswith("HALF"), f"the writer did not reach the write: {line!r} {child.stderr.read()}"  # type: ignore[union-attr]
        full_size = int(line.split()[1])
        assert full_size > 8_000_000  # a large checkpoint (≈ 8 MB of weights)
        partial = list(tmp_path.glob(".model.pt.*.tmp"))
        assert len(partial) == 1 and 0 < partial[0].stat().st_size < full_size
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # The final name still holds the previous version, byte for byte, and it loads.
    assert path.read_bytes() == previous_bytes
    loaded = load_checkpoint(path)
    assert loaded.sha256 == previous_sha and loaded.meta.version == 1
    # The half-written temporary file is never mistaken for a checkpoint …
    with pytest.raises(CheckpointError, match=r"\.tmp.*unreadable"):
        load_checkpoint(partial[0])
    # … and does not get in the way of the next save.
    new_sha = small_checkpoint(path, version=3)
    assert load_checkpoint(path).sha256 == new_sha and load_checkpoint(path).meta.version == 3


def rewrite_record(path: Path, **changes: object) -> None:
    record = torch.load(path, map_location="cpu", weights_only=True)
    record.update(changes)
    buffer = io.BytesIO()
    torch.save(record, buffer)
    path.write_bytes(buffer.getvalue())


def test_corruption_inside_the_weights_is_caught_by_the_checksum(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    small_checkpoint(path)
    record = torch.load(path, map_location="cpu", weights_only=True)
    weights = bytearray(record["weights"])
    weights[len(weights) // 2] ^= 0x01  # one bit of one weight: still a perfectly readable file
    rewrite_record(path, weights=bytes(weights))
    with pytest.raises(CheckpointError, match=r"weights\.pt is corrupted: weights checksum .* != stored"):
        load_checkpoint(path)


def test_tampered_checksum_and_foreign_files_are_refused_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "tampered.pt"
    small_checkpoint(path)
    rewrite_record(path, sha256="0" * 64)
    with pytest.raises(CheckpointError, match=r"tampered\.pt is corrupted"):
        load_checkpoint(path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.pt is not a clickadapt checkpoint"):
        load_checkpoint(foreign)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt is unreadable"):
        load_checkpoint(empty)
