"""What the latency benchmark measures: its settings, one run's spec, the streams and the targets."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clickadapt.data.registry import DatasetConfig
from clickadapt.models.unet import REFERENCE_WIDTHS

DEFAULT_OUTPUT = Path("bench") / "results" / "latency.md"
SHIPPED_WIDTHS: tuple[int, ...] = (16, 32, 64, 128, 256)
"""Widths of the shipped models (used for an untrained stand-in when a checkpoint is missing)."""
BACKBONE_WIDTHS: dict[str, tuple[int, ...]] = {
    "shipped": SHIPPED_WIDTHS,
    "first shipped (2026-11-29)": (8, 16, 32, 64, 128),
    "paper": REFERENCE_WIDTHS,
}
"""Backbone variants of the backbone table."""
STREAMS: dict[str, DatasetConfig] = {
    "brain": DatasetConfig(
        reader="brats", split="test", modality="T1c", slice_policy="all", min_lesion_pixels=200, size=256
    ),
    "fundus": DatasetConfig(reader="rimone-dl", split="test", domains=["r1"], size=256),
}
"""The real streams: brain at 256×256 (BRATS test T1c), fundus at 256×256 (RIM-ONE r1 test)."""
TARGETS_MS: dict[str, float] = {
    "frozen click-to-mask median, brain 256": 60.0,
    "frozen click-to-mask median, fundus 256": 200.0,
    "Mid-Interaction click-to-mask median, brain 256": 250.0,
    "Mid-Interaction click-to-mask median, fundus 256": 250.0,
    "Post-Interaction finish median, brain 256": 400.0,
    "Post-Interaction finish median, fundus 256": 400.0,
}
"""Issues 6 and 13's targets on the 2-core CPU, at the shipped models' input size."""
STRATEGIES = ("frozen", "oaims")
SERVER_START_TIMEOUT_S = 180.0
HTTP_TIMEOUT_S = 120.0
SOURCE_FILE_TOLERANCE = 0.1
"""The HTTP rows send a sample's source file when the server prepares the sample's model input from it within
this many standard deviations (BRATS: at most 0.044, the server not knowing the dataset's brain mask)."""


class LatencySettings(BaseModel):
    """What ``bench/latency.py`` measures.

    Attributes:
        device: Torch device (``cpu``, ``cuda``, ``cuda:1`` …).
        stream_limit: Images per stream (the first ones of the seeded stream order).
        budget: Clicks per image.
        user: Simulated user.
        seed: Seed of the stream order, the user's clicks and the strategy's own randomness.
        threads: Torch intra-op threads; ``None`` = torch's default (all cores).
        brain_model: Brain checkpoint, or ``brain`` for the shipped model (``runs/brain/best.pt`` is used
            when the shipped file is missing).
        fundus_model: Fundus checkpoint, or ``fundus`` likewise.
        data_root: Folder of the real datasets; ``None`` = :func:`~clickadapt.paths.default_data_root`.
        tasks: Tasks to measure.
        http: Also measure through the HTTP API of a ``clickadapt serve`` subprocess.
        tuning: Also measure the CPU-tuning variants.
        backbones: Also measure the backbone variants.
        short_images: Images for the slow variants: other backbones (the paper's widths are slow on a CPU) and
            the other thread count.
        compile: Also try ``torch.compile`` (compile time and forward time).
        isolate: Run each measurement in a fresh process (own peak memory; ``False`` for tests).
        output: The Markdown report; a JSON file with the raw numbers is written beside it.
    """

    model_config = ConfigDict(extra="forbid")

    device: str = "cpu"
    stream_limit: int = Field(12, ge=1)
    budget: int = Field(10, ge=1)
    user: str = "oaims"
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    brain_model: str = "brain"
    fundus_model: str = "fundus"
    data_root: Path | None = None
    tasks: list[str] = Field(default_factory=lambda: ["brain", "fundus"])
    http: bool = True
    tuning: bool = True
    backbones: bool = True
    short_images: int = Field(3, ge=1)
    compile: bool = False
    isolate: bool = True
    output: Path = DEFAULT_OUTPUT


@dataclass(frozen=True)
class RunSpec:
    """One measurement: a strategy on a stream with one model variant.

    Attributes:
        label: Row name in the report.
        task: Task name.
        strategy: Strategy name (``make_strategy``).
        model_path: Checkpoint, or ``None`` for an untrained seeded network of ``widths``.
        widths: Widths of the untrained network (ignored with a checkpoint).
        device: Torch device.
        threads: Intra-op threads (``None`` = default).
        reuse_displayed_forward: The session's hot-path option (``False`` = naive path).
        undo_depth: Undo snapshots per click (0 in benchmarks; the server keeps 3).
        channels_last: Weights and inputs in channels-last memory layout (also for the backward).
        untuned: The network as before the CPU tuning of issue 6: PyTorch's ``nn.InstanceNorm2d`` and the
            contiguous layout for inference forwards too (same function, slower).
        bf16: Forward passes under bfloat16 autocast.
        budget: Clicks per image.
        user: Simulated user.
        seed: Seed.
    """

    label: str
    task: str
    strategy: str
    model_path: str | None
    widths: tuple[int, ...] = SHIPPED_WIDTHS
    device: str = "cpu"
    threads: int | None = None
    reuse_displayed_forward: bool = True
    undo_depth: int = 0
    channels_last: bool = False
    untuned: bool = False
    bf16: bool = False
    budget: int = 10
    user: str = "oaims"
    seed: int = 0

    def replace(self, **changes: Any) -> RunSpec:
        """A copy with ``changes`` applied (field name → value)."""
        return RunSpec(**{**asdict(self), **changes})


def run_spec(settings: LatencySettings, task: str, strategy: str, model_path: Path | None, **changes: Any) -> RunSpec:
    """The spec of one measurement: the settings' device, threads, budget, user and seed, labelled ``default``.

    Args:
        settings: The benchmark's settings.
        task: Task name.
        strategy: Strategy name.
        model_path: Checkpoint, or ``None`` for an untrained stand-in.
        **changes: Fields of :class:`RunSpec` to set instead (``label``, ``threads``, ``widths`` …).
    """
    base = RunSpec(
        label="default",
        task=task,
        strategy=strategy,
        model_path=str(model_path) if model_path is not None else None,
        device=settings.device,
        threads=settings.threads,
        budget=settings.budget,
        user=settings.user,
        seed=settings.seed,
    )
    return base.replace(**changes)
