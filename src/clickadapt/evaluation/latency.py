"""``clickadapt bench-latency``: how long a person waits after each click, measured on a real stream.

A simulated user drives :class:`~clickadapt.adaptation.session.InteractiveSession` over a real target
stream, exactly as in ``clickadapt evaluate``, and every ``add_click`` (click → mask on screen) and every
``finish`` (the Post-Interaction update) is timed by the wall clock:

- brain at 256×256: BRATS test patients' T1c slices (the demo slices when the data folder is absent);
  the shipped brain network runs at 128×128 inside (:class:`~clickadapt.models.resized.ResizedInputNetwork`);
- fundus at 256×256 (the shipped model's input size): RIM-ONE r1 test images.

Per (task, strategy, variant) it reports the click-to-mask median and 95th percentile (for ``oaims``
separately for the first click and for the Mid-Interaction clicks 2..T), the MI update alone, the PI
finish, the peak resident memory and the Dice after clicks 1, 5 and T, so that every speed-up is shown
beside the quality it keeps. Each measurement runs in a fresh process (its peak memory is its own). The
same stream is then sent through the HTTP API of a real ``clickadapt serve`` subprocess. A CPU-tuning
table (threads, naive vs reused forward, undo snapshots, ``channels_last``, bf16 autocast, optionally
``torch.compile``) and a backbone table (widths) complete ``bench/results/latency.md``.

Reproduce: ``python bench/latency.py`` (or ``clickadapt bench-latency``); ``--device cuda`` on a GPU.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import io
import json
import logging
import multiprocessing
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import make_strategy
from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import DEFAULT_CLICK_SIGMA
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.data.registry import DatasetConfig, load_samples
from clickadapt.data.sample import Sample
from clickadapt.evaluation.machine import cpu_and_versions
from clickadapt.evaluation.metrics import region_dice
from clickadapt.evaluation.stream import image_click_seed, seeded_overrides, stream_order
from clickadapt.models.checkpoint import load_checkpoint
from clickadapt.models.factory import count_parameters
from clickadapt.models.unet import REFERENCE_WIDTHS, ReferenceUNet
from clickadapt.paths import resolve_model_spec
from clickadapt.tasks import TASKS, TaskSpec, get_task

logger = logging.getLogger(__name__)

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


class LatencySettings(BaseModel):
    """What ``bench-latency`` measures.

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


@dataclass
class RunResult:
    """Timings (seconds) and quality of one :class:`RunSpec`.

    Attributes:
        spec: What was measured.
        images: Images of the stream.
        size: Image side.
        parameters: Parameters of the network.
        trained: Whether the weights came from a checkpoint (else Dice is meaningless).
        threads: Intra-op threads in use.
        click_s: Every click's click-to-mask time.
        first_click_s: The first click of every image.
        later_click_s: Clicks 2..T (with ``oaims``: the Mid-Interaction clicks).
        update_s: Clicks 2..T: the strategy's update alone (as the session times it).
        snapshot_s: Clicks 2..T: the undo snapshot alone.
        finish_s: Every ``finish`` (with ``oaims``: the Post-Interaction update).
        dice: Per region, the mean Dice after clicks 1..budget.
        baseline_rss_mb: Resident memory after loading, before the stream.
        peak_rss_mb: Peak resident memory of the process.
        gpu_peak_mb: Peak GPU memory allocated (``None`` on a CPU).
    """

    spec: RunSpec
    images: int
    size: int
    parameters: int
    trained: bool
    threads: int
    click_s: list[float] = field(default_factory=list)
    first_click_s: list[float] = field(default_factory=list)
    later_click_s: list[float] = field(default_factory=list)
    update_s: list[float] = field(default_factory=list)
    snapshot_s: list[float] = field(default_factory=list)
    finish_s: list[float] = field(default_factory=list)
    dice: dict[str, list[float]] = field(default_factory=dict)
    baseline_rss_mb: float | None = None
    peak_rss_mb: float = 0.0
    gpu_peak_mb: float | None = None


@dataclass
class HttpResult:
    """Timings (seconds) of the same stream through the HTTP API.

    Attributes:
        task: Task name.
        strategy: Strategy of the server.
        images: Images sent.
        size: Image side.
        autosave: Whether the server saved the weights after every updating click (its default).
        click_s: Round trip of every ``POST …/clicks``.
        first_click_s: The first click of every image.
        later_click_s: Clicks 2..T.
        server_click_s: The server's own ``last_click_s`` (forward + update) of every click.
        finish_s: Round trip of every ``POST …/finish``.
        dice: Per region, the mean Dice after clicks 1..budget (masks read back over HTTP).
        server_peak_rss_mb: Peak resident memory of the server process.
    """

    task: str
    strategy: str
    images: int
    size: int
    autosave: bool
    click_s: list[float] = field(default_factory=list)
    first_click_s: list[float] = field(default_factory=list)
    later_click_s: list[float] = field(default_factory=list)
    server_click_s: list[float] = field(default_factory=list)
    finish_s: list[float] = field(default_factory=list)
    dice: dict[str, list[float]] = field(default_factory=dict)
    server_peak_rss_mb: float | None = None


# ====================================================================== statistics and machine


def median_ms(values: Sequence[float]) -> float | None:
    """Median of seconds, in milliseconds (``None`` for no values)."""
    return float(np.median(values) * 1000.0) if len(values) else None


def p95_ms(values: Sequence[float]) -> float | None:
    """95th percentile of seconds, in milliseconds (``None`` for no values)."""
    return float(np.percentile(values, 95) * 1000.0) if len(values) else None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, because ``getrusage``'s ``ru_maxrss`` carries the parent's
    peak over into a process started by fork + exec (a spawned worker would report at least its parent's
    peak). Elsewhere ``getrusage`` (KiB on Linux, bytes on macOS).
    """
    high_water = process_peak_rss_mb(os.getpid())
    if high_water is not None:
        return high_water
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def current_rss_mb() -> float | None:
    """Current resident memory of this process in MiB (Linux ``/proc``; ``None`` elsewhere)."""
    statm = Path("/proc/self/statm")
    if not statm.is_file():
        return None
    pages = int(statm.read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


def process_peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory (``VmHWM``) of another process in MiB (Linux only)."""
    status = Path(f"/proc/{pid}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def machine_description(device: str) -> dict[str, str]:
    """CPU model and cores (``lscpu``), torch version, device, load and the date, for the report."""
    info = cpu_and_versions()
    info["cores"] = info.pop("cpus")
    info["device"] = device
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    info["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    info["load"] = load_description()
    return info


def load_description() -> str:
    """Load averages and whether a training job runs (the machine is shared)."""
    try:
        one, five, fifteen = os.getloadavg()
        load = f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"
    except OSError:
        load = "unknown"
    training = "unknown"
    try:
        found = subprocess.run(["pgrep", "-f", "clickadapt train"], capture_output=True, text=True, check=False)
        training = "yes" if found.stdout.strip() else "no"
    except OSError:
        pass
    return f"load average {load}; `clickadapt train` running: {training}"


# ====================================================================== models and variants


class ChannelsLastNetwork(nn.Module):
    """Runs a network with weights and inputs in channels-last memory layout (same function)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits, returned in the default (contiguous) layout."""
        logits: torch.Tensor = self.network(inputs.contiguous(memory_format=torch.channels_last))
        return logits.contiguous()


class Bfloat16Network(nn.Module):
    """Runs a network under bfloat16 autocast; logits are returned as float32."""

    def __init__(self, network: nn.Module, device_type: str) -> None:
        super().__init__()
        self.network = network
        self.device_type = device_type

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits as float32."""
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            logits: torch.Tensor = self.network(inputs)
        return logits.float()


def untune_network(network: nn.Module) -> None:
    """Undo, in place, the reference U-Net's CPU tuning: ``nn.InstanceNorm2d`` modules, no channels-last input."""
    device = next(network.parameters()).device
    for module in list(network.modules()):
        if isinstance(module, ReferenceUNet):
            module.channels_last_inference = False
        for name, child in module.named_children():
            if isinstance(child, nn.InstanceNorm2d) and type(child) is not nn.InstanceNorm2d:
                plain = nn.InstanceNorm2d(child.num_features, eps=child.eps, affine=child.affine).to(device)
                plain.load_state_dict(child.state_dict())
                setattr(module, name, plain)


def resolve_model_path(spec: str) -> Path | None:
    """The checkpoint ``spec`` names (:func:`~clickadapt.paths.resolve_model_spec`), or ``None`` when it is a
    task name whose model exists nowhere (an untrained stand-in is then measured).

    Raises:
        FileNotFoundError: For a file path that does not exist.
    """
    try:
        return resolve_model_spec(spec)
    except FileNotFoundError:
        if spec in TASKS:
            return None
        raise


def build_network(spec: RunSpec, task: TaskSpec) -> tuple[nn.Module, float, bool]:
    """The network of a run with its variants applied, its click σ, and whether it is trained."""
    click_sigma = DEFAULT_CLICK_SIGMA
    if spec.model_path is not None:
        loaded = load_checkpoint(spec.model_path, spec.device)
        if loaded.task.name != task.name:
            raise ValueError(f"{spec.model_path} is a {loaded.task.name!r} model, the stream is {task.name!r}")
        network, trained = loaded.model, True
        click_sigma = loaded.meta.preprocessing.click_sigma
    else:
        torch.manual_seed(spec.seed)
        network, trained = ReferenceUNet(task.input_channels, task.num_classes, spec.widths, affine_norm=True), False
    network = network.to(spec.device).eval()
    if spec.untuned:
        untune_network(network)
    if spec.channels_last:
        network = ChannelsLastNetwork(network)
    if spec.bf16:
        network = Bfloat16Network(network, torch.device(spec.device).type)
    return network, click_sigma, trained


# ====================================================================== in-process measurement


def _synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _interact(
    session: InteractiveSession, sample: Sample, spec: RunSpec, result: RunResult | None, task: TaskSpec
) -> list[dict[str, float]]:
    """One image: clicks until the budget (or a perfect mask), then finish; timings go into ``result``."""
    user = make_simulated_user(spec.user, image_click_seed(spec.seed, sample.key))
    session.set_image(sample.image, image_id=sample.key)
    dice_per_click: list[dict[str, float]] = []
    click: Click | None = user.first_click(sample.label)
    while click is not None:
        start = time.perf_counter()
        prediction = session.add_click(click)
        elapsed = time.perf_counter() - start
        if result is not None:
            result.click_s.append(elapsed)
            timing = session.timings[-1]
            if len(session.clicks) == 1:
                result.first_click_s.append(elapsed)
            else:
                result.later_click_s.append(elapsed)
                result.update_s.append(timing.update_s)
                result.snapshot_s.append(timing.snapshot_s)
        dice_per_click.append(region_dice(prediction, sample.label, task))
        if len(session.clicks) >= spec.budget:
            break
        click = user.next_click(sample.label, prediction)
    start = time.perf_counter()
    session.finish()
    _synchronise(spec.device)
    if result is not None:
        result.finish_s.append(time.perf_counter() - start)
    return dice_per_click


def mean_dice_curves(
    curves: Sequence[Sequence[dict[str, float]]], regions: Iterable[str], budget: int
) -> dict[str, list[float]]:
    """Per region, the mean Dice after clicks 1..budget (a curve that stopped early keeps its last value)."""
    means: dict[str, list[float]] = {}
    for region in regions:
        rows = []
        for curve in curves:
            values = [step[region] for step in curve]
            rows.append(values + [values[-1]] * (budget - len(values)))
        means[region] = [float(v) for v in np.mean(rows, axis=0)] if rows else []
    return means


def measure_stream(spec: RunSpec, samples: Sequence[Sample]) -> RunResult:
    """Drive sessions over ``samples`` with a simulated user and time every click and finish.

    One warm-up image (on a copy of the network, not counted) comes first, so that one-off costs
    (allocator, kernel selection) are not charged to the stream.

    Args:
        spec: What to measure.
        samples: The stream, in stream order.

    Returns:
        The timings, Dice and memory of the run.
    """
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    task = get_task(spec.task)
    network, click_sigma, trained = build_network(spec, task)
    overrides = seeded_overrides(spec.strategy, {}, spec.seed)
    warm_state = ModelState(copy.deepcopy(network), task, make_strategy(spec.strategy, task, **overrides), spec.device)
    warm_spec = RunSpec(**{**asdict(spec), "budget": min(spec.budget, 3)})
    _interact(
        InteractiveSession(warm_state, click_sigma=click_sigma, undo_depth=spec.undo_depth),
        samples[0],
        warm_spec,
        None,
        task,
    )
    del warm_state
    if spec.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(spec.device))
    state = ModelState(network, task, make_strategy(spec.strategy, task, **overrides), spec.device)
    result = RunResult(
        spec=spec,
        images=len(samples),
        size=int(samples[0].image.shape[-1]),
        parameters=count_parameters(network),
        trained=trained,
        threads=torch.get_num_threads(),
        baseline_rss_mb=current_rss_mb(),
    )
    curves = []
    for sample in samples:
        session = InteractiveSession(
            state,
            click_sigma=click_sigma,
            undo_depth=spec.undo_depth,
            reuse_displayed_forward=spec.reuse_displayed_forward,
        )
        curves.append(_interact(session, sample, spec, result, task))
    result.dice = mean_dice_curves(curves, task.regions, spec.budget)
    result.peak_rss_mb = peak_rss_mb()
    if spec.device.startswith("cuda"):
        result.gpu_peak_mb = torch.cuda.max_memory_allocated(torch.device(spec.device)) / 2**20
    return result


def run_measurement(spec: RunSpec, samples: Sequence[Sample], isolate: bool) -> RunResult:
    """:func:`measure_stream`, in a fresh process when ``isolate`` (so the peak memory is this run's own)."""
    logger.info("measuring %s / %s / %s on %d images", spec.task, spec.strategy, spec.label, len(samples))
    if not isolate:
        return measure_stream(spec, samples)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measure_stream, spec, list(samples)).result()


# ====================================================================== torch.compile


def measure_compile(task: TaskSpec, size: int, device: str, repeats: int = 10) -> dict[str, Any]:
    """Compile time and inference-forward median of ``torch.compile`` against eager, on the shipped widths.

    Returns:
        ``{"compiled": bool, "compile_s", "eager_ms", "compiled_ms", "max_abs_diff"}`` or an ``"error"``.
    """
    torch.manual_seed(0)
    network = ReferenceUNet(task.input_channels, task.num_classes, SHIPPED_WIDTHS, affine_norm=True).to(device).eval()
    inputs = torch.randn(1, task.input_channels, size, size, device=device)

    def timed(module: Any) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            with torch.inference_mode():
                module(inputs)
            _synchronise(device)
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000.0)

    eager_ms = timed(network)
    try:
        compiled = torch.compile(network)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled_out = compiled(inputs)
            eager_out = network(inputs)
        compile_s = time.perf_counter() - start
        compiled_ms = timed(compiled)
    except Exception as error:  # compilation needs a working C++ toolchain; report any failure
        return {"compiled": False, "error": f"{type(error).__name__}: {str(error)[:300]}", "eager_ms": eager_ms}
    return {
        "compiled": True,
        "compile_s": compile_s,
        "eager_ms": eager_ms,
        "compiled_ms": compiled_ms,
        "max_abs_diff": float((compiled_out - eager_out).abs().max()),
    }


# ====================================================================== HTTP


def write_sample_file(sample: Sample, path: Path) -> None:
    """Write one sample's image as a file the server reads (see :func:`write_stream_folder`)."""
    import tifffile
    from PIL import Image

    if sample.image.shape[0] == 1:
        tifffile.imwrite(path, sample.image[0].astype(np.float32))
        return
    channels = sample.image.astype(np.float64)
    low = channels.min(axis=(1, 2), keepdims=True)
    high = channels.max(axis=(1, 2), keepdims=True)
    scaled = np.round((channels - low) / np.maximum(high - low, 1e-12) * 255.0).astype(np.uint8)
    Image.fromarray(np.ascontiguousarray(scaled.transpose(1, 2, 0)), mode="RGB").save(path)


def sample_file_suffix(sample: Sample) -> str:
    """``.tif`` for grey (brain) samples, ``.png`` for colour (fundus) ones."""
    return ".tif" if sample.image.shape[0] == 1 else ".png"


def write_stream_folder(samples: Sequence[Sample], folder: Path) -> dict[str, Sample]:
    """Write the stream as files the server reads; returns file name → sample.

    Brain slices go as float32 TIFF (the server z-scores them again inside the brain, no resampling at
    the model's size); fundus images as 8-bit PNG, each channel rescaled to 0..255 (the server z-scores
    each channel again, and keeps the size when it equals ``--image-size``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for index, sample in enumerate(samples):
        name = f"{index:03d}{sample_file_suffix(sample)}"
        write_sample_file(sample, folder / name)
        names[name] = sample
    return names


class ServerProcess:
    """A ``clickadapt serve`` subprocess on a free loopback port.

    Args:
        arguments: Options after ``serve``.
        environment: Extra environment variables (e.g. ``CLICKADAPT_AUTOSAVE_EVERY_CLICK``).

    Raises:
        RuntimeError: If the server exits or does not print its address in time (with its output).
    """

    def __init__(self, arguments: Sequence[str], environment: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "clickadapt.cli", "serve", "--port", "0", *arguments]
        env = {**os.environ, **(environment or {})}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
        self.output: list[str] = []
        self.address = self._wait_for_address(command)

    def _wait_for_address(self, command: Sequence[str]) -> str:
        found: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                if "open http" in line and not found:
                    found.append(line.split("open ", 1)[1].strip())
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(SERVER_START_TIMEOUT_S)
        if not found:
            self.stop()
            raise RuntimeError(f"`{shlex.join(command)}` did not start:\n{''.join(self.output)[-3000:]}")
        return found[0].split("?", 1)[0].rstrip("/")

    @property
    def peak_rss_mb(self) -> float | None:
        """The server's peak resident memory so far."""
        return process_peak_rss_mb(self.process.pid)

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def measure_http(
    task: TaskSpec,
    model_path: Path,
    samples: Sequence[Sample],
    strategy: str,
    settings: LatencySettings,
    workdir: Path,
    autosave: bool = True,
) -> HttpResult:
    """Send the stream through a real server: open, clicks (timed), finish (timed), per image.

    The simulated user reads each mask back with ``GET …/mask.png`` (not timed) to choose the next click.

    Raises:
        RuntimeError: If the server does not start or an image is missing from its list.
    """
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise

    size = int(samples[0].image.shape[-1])
    folder = workdir / f"{task.name}-data"
    by_name = write_stream_folder(samples, folder)
    warm_up_name = "warmup" + sample_file_suffix(samples[0])
    write_sample_file(samples[0], folder / warm_up_name)
    arguments = ["--model", str(model_path), "--data", str(folder), "--image-size", str(size)]
    arguments += [
        "--store",
        str(workdir / f"store-{task.name}-{strategy}-{int(autosave)}"),
        "--device",
        settings.device,
    ]
    arguments += ["--no-adaptation"] if strategy == "frozen" else ["--strategy", strategy]
    environment = {"CLICKADAPT_AUTOSAVE_EVERY_CLICK": "1" if autosave else "0"}
    if settings.threads is not None:
        environment.update({"OMP_NUM_THREADS": str(settings.threads), "MKL_NUM_THREADS": str(settings.threads)})
    server = ServerProcess(arguments, environment)
    result = HttpResult(task=task.name, strategy=strategy, images=len(samples), size=size, autosave=autosave)
    curves = []
    try:
        with httpx.Client(base_url=server.address, timeout=HTTP_TIMEOUT_S, headers={"X-Client-Id": "bench"}) as client:
            listed = client.get("/api/images")
            listed.raise_for_status()
            ids = {image["name"]: image["id"] for image in listed.json()}
            missing = [name for name in [warm_up_name, *by_name] if name not in ids]
            if missing:
                raise RuntimeError(f"the server does not list {missing[:3]}; it lists {sorted(ids)[:5]}")
            _http_warm_up(client, ids[warm_up_name], samples[0], settings)
            for name, sample in by_name.items():
                curves.append(_http_image(client, ids[name], sample, task, settings, result))
    finally:
        result.server_peak_rss_mb = server.peak_rss_mb
        server.stop()
    result.dice = mean_dice_curves(curves, task.regions, settings.budget)
    return result


def _http_warm_up(client: Any, image_id: str, sample: Sample, settings: LatencySettings) -> None:
    """Two clicks on a copy of the first image, then two undos: warms every code path, leaves the weights."""
    user = make_simulated_user(settings.user, image_click_seed(settings.seed, sample.key))
    client.post(f"/api/images/{image_id}/open", json={}).raise_for_status()
    for click in (user.first_click(sample.label), Click(0, 0, 0)):
        client.post(
            f"/api/images/{image_id}/clicks", json={"row": click.row, "col": click.col, "label": click.label}
        ).raise_for_status()
    for _ in range(2):
        client.post(f"/api/images/{image_id}/undo").raise_for_status()


def _http_image(
    client: Any,
    image_id: str,
    sample: Sample,
    task: TaskSpec,
    settings: LatencySettings,
    result: HttpResult,
) -> list[dict[str, float]]:
    """One image through the API: open, clicks (timed), mask read-backs (not timed), finish (timed)."""
    from PIL import Image

    user = make_simulated_user(settings.user, image_click_seed(settings.seed, sample.key))
    opened = client.post(f"/api/images/{image_id}/open", json={})
    opened.raise_for_status()
    dice_per_click: list[dict[str, float]] = []
    click: Click | None = user.first_click(sample.label)
    count = 0
    while click is not None:
        start = time.perf_counter()
        response = client.post(
            f"/api/images/{image_id}/clicks", json={"row": click.row, "col": click.col, "label": click.label}
        )
        elapsed = time.perf_counter() - start
        response.raise_for_status()
        count += 1
        result.click_s.append(elapsed)
        (result.first_click_s if count == 1 else result.later_click_s).append(elapsed)
        server_s = response.json().get("last_click_s")
        if server_s is not None:
            result.server_click_s.append(float(server_s))
        mask_response = client.get(f"/api/images/{image_id}/mask.png", params={"tag": "current"})
        mask_response.raise_for_status()
        with Image.open(io.BytesIO(mask_response.content)) as picture:
            prediction = np.asarray(picture, dtype=np.int64)
        dice_per_click.append(region_dice(prediction, sample.label, task))
        if count >= settings.budget:
            break
        click = user.next_click(sample.label, prediction)
    start = time.perf_counter()
    finished = client.post(f"/api/images/{image_id}/finish")
    elapsed = time.perf_counter() - start
    finished.raise_for_status()
    result.finish_s.append(elapsed)
    return dice_per_click


# ====================================================================== streams and the whole benchmark


def load_stream(task_name: str, settings: LatencySettings) -> tuple[list[Sample], str]:
    """The first ``stream_limit`` images of a task's real stream, in the seeded stream order.

    Brain falls back to the built-in demo BRATS T1c slices when the data folder is absent.

    Returns:
        The samples and a sentence describing them (empty list when no data is available).
    """
    from clickadapt.data.registry import get_reader

    config = STREAMS[task_name]
    if settings.data_root is not None:
        subfolder = get_reader(config.reader).subfolder
        config = config.model_copy(update={"root": settings.data_root / (subfolder or "")})
    root = config.resolved_root()
    if root.is_dir():
        samples = load_samples(config)
        description = f"{config.reader} {config.split or 'all'} {config.modality or ''} {config.domains or ''}".strip()
        description = " ".join(description.split()) + f" from {root}"
    elif task_name == "brain":
        from clickadapt.data.demo import load_demo_samples

        samples = [s for s in load_demo_samples() if s.dataset == "brats" and s.domain == "T1c"]
        description = f"built-in demo BRATS T1c slices ({root} not found)"
    else:
        return [], f"no data: {root} not found"
    samples = [sample for sample in samples if np.any(sample.label > 0)]
    ordered = [samples[index] for index in stream_order(len(samples), settings.seed)][: settings.stream_limit]
    size = ordered[0].image.shape[-1] if ordered else 0
    return (
        ordered,
        f"{description}: {len(ordered)} of {len(samples)} images (seeded order {settings.seed}), {size}×{size}",
    )


def _spec(settings: LatencySettings, task: str, strategy: str, model_path: Path | None, **changes: Any) -> RunSpec:
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
    return RunSpec(**{**asdict(base), **changes})


def forward_ms(spec: RunSpec, sample: Sample, repeats: int = 5) -> float:
    """Median inference-forward time of a run's network on one sample with one click (a quick probe)."""
    from clickadapt.clicks.encoding import model_input

    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    task = get_task(spec.task)
    network, click_sigma, _ = build_network(spec, task)
    image = torch.from_numpy(sample.image).to(spec.device)
    inputs = model_input(image, [Click(sample.shape[0] // 2, sample.shape[1] // 2, 1)], task.num_classes, click_sigma)
    inputs = inputs.unsqueeze(0)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with torch.inference_mode():
            network(inputs)
        _synchronise(spec.device)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]) * 1000.0)


def run_benchmark(settings: LatencySettings, command: str) -> dict[str, Any]:
    """Measure everything ``settings`` asks for and write the report.

    Args:
        settings: What to measure.
        command: The command line, recorded in the report.

    Returns:
        The raw results (also written as JSON beside the Markdown report).
    """
    report: dict[str, Any] = {
        "command": command,
        "settings": json.loads(settings.model_dump_json()),
        "machine": machine_description(settings.device),
        "streams": {},
        "runs": [],
        "http": [],
        "probes": [],
        "compile": [],
        "notes": [],
    }
    for task_name in settings.tasks:
        samples, description = load_stream(task_name, settings)
        report["streams"][task_name] = description
        if not samples:
            report["notes"].append(f"{task_name}: skipped, {description}")
            continue
        model_path = resolve_model_path(settings.brain_model if task_name == "brain" else settings.fundus_model)
        if model_path is None:
            report["notes"].append(f"{task_name}: no checkpoint found; an untrained network of the shipped widths")
        main_runs = [_spec(settings, task_name, strategy, model_path) for strategy in STRATEGIES]
        for spec in main_runs:
            report["runs"].append(asdict(run_measurement(spec, samples, settings.isolate)))
        if settings.http and model_path is not None:
            with tempfile.TemporaryDirectory(prefix="clickadapt-latency-") as workdir:
                variants = [("frozen", True), ("oaims", True)]
                if task_name == "brain":
                    variants.append(("oaims", False))  # the cost of the server's autosave
                for strategy, autosave in variants:
                    logger.info("measuring %s / %s over HTTP (autosave %s)", task_name, strategy, autosave)
                    http = measure_http(
                        get_task(task_name), model_path, samples, strategy, settings, Path(workdir), autosave
                    )
                    report["http"].append(asdict(http))
        if settings.tuning:
            report["runs"].extend(asdict(result) for result in _tuning_runs(settings, task_name, model_path, samples))
            report["probes"].extend(_precision_probes(settings, task_name, model_path, samples[0]))
        if settings.backbones and task_name == "brain":
            subset = samples[: settings.short_images]
            for name, widths in BACKBONE_WIDTHS.items():
                if name == "shipped":
                    continue  # the main rows
                for strategy in STRATEGIES:
                    spec = _spec(settings, task_name, strategy, None, label=f"backbone {name}", widths=widths)
                    report["runs"].append(asdict(run_measurement(spec, subset, settings.isolate)))
        if settings.compile:
            size = int(samples[0].image.shape[-1])
            report["compile"].append(
                {"task": task_name, "size": size, **measure_compile(get_task(task_name), size, settings.device)}
            )
    report["machine"]["load_end"] = load_description()
    write_report(report, settings.output)
    return report


def _tuning_runs(
    settings: LatencySettings, task_name: str, model_path: Path | None, samples: Sequence[Sample]
) -> list[RunResult]:
    """The CPU-tuning variants: the other thread count, the naive path, undo snapshots, untuned, channels-last.

    Brain runs the naive path, the snapshots and channels-last with ``oaims`` (and channels-last with
    ``frozen``) on the whole stream; fundus (slower) only the frozen ones. The thread count
    (1 ↔ the default) is compared on ``frozen`` over the first ``short_images`` images.
    """
    other_threads = 1 if settings.threads != 1 else max(os.cpu_count() or 1, 2)
    thread_label = f"{other_threads} thread" + ("s" if other_threads > 1 else "")
    variants: list[tuple[str, dict[str, Any], tuple[str, ...], int]] = [
        (thread_label, {"threads": other_threads}, ("frozen",), settings.short_images),
        ("naive path (no graph reuse)", {"reuse_displayed_forward": False}, ("oaims",), len(samples)),
        ("undo snapshots (depth 3, server)", {"undo_depth": 3}, ("oaims",), len(samples)),
        ("untuned network (nn.InstanceNorm2d, contiguous)", {"untuned": True}, STRATEGIES, len(samples)),
        ("channels_last weights", {"channels_last": True}, STRATEGIES, len(samples)),
    ]
    results = []
    for label, changes, strategies, count in variants:
        for strategy in strategies:
            if task_name == "fundus" and strategy != "frozen":
                continue
            spec = _spec(settings, task_name, strategy, model_path, label=label, **changes)
            results.append(run_measurement(spec, samples[:count], settings.isolate))
    return results


def forward_probes(specs: Sequence[RunSpec], sample: Sample) -> list[float]:
    """:func:`forward_ms` of several variants, one after the other in this process."""
    return [forward_ms(spec, sample) for spec in specs]


def _precision_probes(
    settings: LatencySettings, task_name: str, model_path: Path | None, sample: Sample
) -> list[dict[str, Any]]:
    """Inference-forward time of fp32, channels-last and bf16 autocast on one image (quick, no stream)."""
    variants: tuple[tuple[str, dict[str, Any]], ...] = (
        ("fp32", {}),
        ("untuned network", {"untuned": True}),
        ("channels_last weights", {"channels_last": True}),
        ("bf16 autocast", {"bf16": True}),
    )
    specs = [_spec(settings, task_name, "frozen", model_path, label=label, **changes) for label, changes in variants]
    if settings.isolate:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            times = pool.submit(forward_probes, specs, sample).result()
    else:
        times = forward_probes(specs, sample)
    size = int(sample.image.shape[-1])
    return [
        {"task": task_name, "size": size, "variant": spec.label, "forward_ms": milliseconds}
        for spec, milliseconds in zip(specs, times, strict=True)
    ]


# ====================================================================== report


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _pair(values: Sequence[float]) -> str:
    return f"{_ms(median_ms(values))} / {_ms(p95_ms(values))}"


def _dice_text(dice: dict[str, list[float]], trained: bool, budget: int) -> str:
    if not trained:
        return "untrained"
    parts = []
    for region, curve in dice.items():
        if curve:
            picks = [curve[0], curve[min(4, len(curve) - 1)], curve[-1]]
            parts.append(f"{region} " + "/".join(f"{100 * value:.1f}" for value in picks))
    return "; ".join(parts)


def _find_run(report: dict[str, Any], task: str, strategy: str, label: str = "default") -> dict[str, Any] | None:
    for run in report["runs"]:
        spec = run["spec"]
        if spec["task"] == task and spec["strategy"] == strategy and spec["label"] == label:
            return run
    return None


def target_rows(report: dict[str, Any]) -> list[tuple[str, float | None, float]]:
    """(target, measured median ms or ``None``, limit ms) for each of issue 6's targets."""
    picks = {
        "frozen click-to-mask median, brain 256": ("brain", "frozen", "click_s"),
        "frozen click-to-mask median, fundus 256": ("fundus", "frozen", "click_s"),
        "Mid-Interaction click-to-mask median, brain 256": ("brain", "oaims", "later_click_s"),
        "Mid-Interaction click-to-mask median, fundus 256": ("fundus", "oaims", "later_click_s"),
        "Post-Interaction finish median, brain 256": ("brain", "oaims", "finish_s"),
        "Post-Interaction finish median, fundus 256": ("fundus", "oaims", "finish_s"),
    }
    rows = []
    for name, limit in TARGETS_MS.items():
        task, strategy, key = picks[name]
        run = _find_run(report, task, strategy)
        rows.append((name, median_ms(run[key]) if run is not None else None, limit))
    return rows


def render_report(report: dict[str, Any]) -> str:
    """The Markdown report of :func:`run_benchmark`'s results."""
    machine = report["machine"]
    settings = report["settings"]
    lines = [
        "# Click latency",
        "",
        "How long a person waits from a click to the mask on screen, measured by a simulated user driving",
        "`InteractiveSession` over a real stream (one session per image, one shared adapting model, as in",
        "`clickadapt evaluate` and in the server). Times are wall-clock medians / 95th percentiles in ms.",
        "",
        f"- Command: `{report['command']}`",
        f"- Date: {machine['date']}",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, torch {machine['torch']}; "
        f"device {machine['device']}" + (f" ({machine['gpu']})" if "gpu" in machine else ""),
        f"- Load at start: {machine['load']}",
        f"- Load at end: {machine.get('load_end', 'unknown')}",
        f"- User `{settings['user']}`, seed {settings['seed']}, budget {settings['budget']} clicks; "
        f"threads {settings['threads'] or 'torch default'}",
    ]
    for task, description in report["streams"].items():
        lines.append(f"- Stream {task}: {description}")
    lines += [f"- Note: {note}" for note in report["notes"]]
    lines += ["", "## Targets (issue 6, 2-core CPU)", "", "| target | measured median (ms) | limit (ms) | met |"]
    lines.append("|---|---|---|---|")
    for name, measured, limit in target_rows(report):
        met = "–" if measured is None else ("yes" if measured <= limit else "no")
        lines.append(f"| {name} | {_ms(measured)} | {limit:.0f} | {met} |")
    lines += [
        "",
        "## In-process (`InteractiveSession`)",
        "",
        "Click→mask: everything `add_click` does (click maps, forwards, update, argmax). Clicks 2..T: with `oaims`",
        "these are the Mid-Interaction clicks; *MI update* is the strategy hook alone. *Finish*: `finish()`, with",
        "`oaims` the Post-Interaction update. Dice (%) after clicks 1 / 5 / T, mean over the stream's images.",
        (
            "Each row runs in a fresh process; peak RSS is that process's (`VmHWM`, else `getrusage`), "
            "baseline = after loading."
            if settings["isolate"]
            else "All rows ran in one process: peak RSS is that process's peak so far."
        ),
        "",
        "| task | size | strategy | variant | threads | images | click→mask | first click | clicks 2..T | MI update "
        "| finish | peak RSS MiB (baseline) | Dice @1/5/T |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        spec = run["spec"]
        baseline = run["baseline_rss_mb"]
        memory = f"{run['peak_rss_mb']:.0f}" + (f" ({baseline:.0f})" if baseline is not None else "")
        if run["gpu_peak_mb"] is not None:
            memory += f"; GPU {run['gpu_peak_mb']:.0f}"
        variant = spec["label"]
        if variant.startswith("backbone"):
            variant += f" {list(spec['widths'])}, {run['parameters'] / 1e6:.2f} M"
        update = _pair(run["update_s"]) if spec["strategy"] != "frozen" else "–"
        finish = _pair(run["finish_s"]) if spec["strategy"] != "frozen" else "–"
        lines.append(
            f"| {spec['task']} | {run['size']} | {spec['strategy']} | {variant} | {run['threads']} | {run['images']} "
            f"| {_pair(run['click_s'])} | {_pair(run['first_click_s'])} | {_pair(run['later_click_s'])} | {update} "
            f"| {finish} | {memory} | {_dice_text(run['dice'], run['trained'], spec['budget'])} |"
        )
    lines += _consistency_lines(report)
    if report["http"]:
        lines += [
            "",
            "## HTTP API (`clickadapt serve` subprocess, loopback, httpx)",
            "",
            "Round trip of `POST /api/images/{id}/clicks` (the server's work, its datastore write, the PNG overlay",
            "and the JSON) and of `POST …/finish`; *server* = the `last_click_s` the server reports (forward +",
            "update). The server keeps undo snapshots (depth 3) and by default saves the weights after every",
            "click that changed them (*autosave*). Same stream and user; masks read back with `GET …/mask.png`.",
            "",
            "| task | size | strategy | autosave | images | click request | first click | clicks 2..T | server "
            "| finish request | server peak RSS MiB | Dice @1/5/T |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for http in report["http"]:
            rss = http["server_peak_rss_mb"]
            lines.append(
                f"| {http['task']} | {http['size']} | {http['strategy']} | {'on' if http['autosave'] else 'off'} "
                f"| {http['images']} | {_pair(http['click_s'])} | {_pair(http['first_click_s'])} "
                f"| {_pair(http['later_click_s'])} | {_pair(http['server_click_s'])} | {_pair(http['finish_s'])} "
                f"| {'–' if rss is None else f'{rss:.0f}'} | {_dice_text(http['dice'], True, settings['budget'])} |"
            )
    if report["probes"]:
        lines += [
            "",
            "## Precision and layout probes (one inference forward, median of 5)",
            "",
            "| task | size | variant | forward (ms) |",
            "|---|---|---|---|",
        ]
        lines += [f"| {p['task']} | {p['size']} | {p['variant']} | {p['forward_ms']:.1f} |" for p in report["probes"]]
    if report["compile"]:
        lines += ["", "## torch.compile (inference forward, shipped widths)", ""]
        for entry in report["compile"]:
            if entry.get("compiled"):
                lines.append(
                    f"- {entry['task']} {entry['size']}: compile {entry['compile_s']:.1f} s; eager "
                    f"{entry['eager_ms']:.1f} ms, compiled {entry['compiled_ms']:.1f} ms; max |Δlogit| "
                    f"{entry['max_abs_diff']:.2e}"
                )
            else:
                lines.append(f"- {entry['task']} {entry['size']}: not compiled ({entry.get('error')})")
    return "\n".join(lines) + "\n"


def _consistency_lines(report: dict[str, Any]) -> list[str]:
    """Whether the optimised rows kept the naive path's Dice exactly."""
    lines = []
    for task in report["streams"]:
        fast, naive = _find_run(report, task, "oaims"), _find_run(report, task, "oaims", "naive path (no graph reuse)")
        if fast is None or naive is None or not fast["trained"]:
            continue
        difference = max(
            (
                abs(a - b)
                for region in fast["dice"]
                for a, b in zip(fast["dice"][region], naive["dice"][region], strict=True)
            ),
            default=0.0,
        )
        verdict = "identical" if difference == 0.0 else f"max difference {100 * difference:.3f} points"
        lines.append(f"- {task} `oaims`: Dice per click with graph reuse vs the naive path: {verdict}.")
    return ["", *lines] if lines else []


def write_report(report: dict[str, Any], output: Path) -> None:
    """Write the Markdown report and, beside it, the raw results as JSON."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_report(report), encoding="utf-8")
    output.with_suffix(".json").write_text(json.dumps(report, indent=1), encoding="utf-8")


# ====================================================================== command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench-latency`` (shared by ``bench/latency.py``)."""
    defaults = LatencySettings()
    parser.add_argument("--device", default=defaults.device, help="torch device (default cpu; e.g. cuda)")
    parser.add_argument("--stream-limit", type=int, default=defaults.stream_limit, help="images per stream")
    parser.add_argument("--budget", type=int, default=defaults.budget, help="clicks per image")
    parser.add_argument("--user", default=defaults.user, help="simulated user (oaims, center, deepest)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="stream order, clicks and strategy seed")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: all cores)")
    parser.add_argument("--brain-model", default=defaults.brain_model, help="brain checkpoint (default: shipped)")
    parser.add_argument("--fundus-model", default=defaults.fundus_model, help="fundus checkpoint (default: shipped)")
    parser.add_argument("--data-root", type=Path, help="folder of the real datasets (default ../shared/data)")
    parser.add_argument("--tasks", default=",".join(defaults.tasks), help="comma-separated: brain,fundus")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP API measurement")
    parser.add_argument("--no-tuning", action="store_true", help="skip the CPU-tuning variants")
    parser.add_argument("--no-backbones", action="store_true", help="skip the backbone variants")
    parser.add_argument(
        "--short-images", type=int, default=defaults.short_images, help="images for backbones and thread count"
    )
    parser.add_argument("--compile", action="store_true", help="also try torch.compile")
    parser.add_argument("--in-process", action="store_true", help="no fresh process per measurement")
    parser.add_argument("--output", type=Path, default=defaults.output, help=f"report (default {defaults.output})")


def settings_from_args(args: argparse.Namespace) -> LatencySettings:
    """The settings of a parsed command line.

    Raises:
        ValueError: For an unknown task or an invalid value (naming it).
    """
    tasks = [name.strip() for name in args.tasks.split(",") if name.strip()]
    unknown = [name for name in tasks if name not in STREAMS]
    if unknown or not tasks:
        raise ValueError(f"--tasks: unknown task(s) {unknown or args.tasks!r}; known: {', '.join(STREAMS)}")
    return LatencySettings(
        device=args.device,
        stream_limit=args.stream_limit,
        budget=args.budget,
        user=args.user,
        seed=args.seed,
        threads=args.threads,
        brain_model=args.brain_model,
        fundus_model=args.fundus_model,
        data_root=args.data_root,
        tasks=tasks,
        http=not args.no_http,
        tuning=not args.no_tuning,
        backbones=not args.no_backbones,
        short_images=args.short_images,
        compile=args.compile,
        isolate=not args.in_process,
        output=args.output,
    )


def run_command(args: argparse.Namespace) -> int:
    """Handler of ``clickadapt bench-latency``."""
    settings = settings_from_args(args)
    make_simulated_user(settings.user, 0)  # validates the name before any work
    command = getattr(args, "command_line", None) or shlex.join(["clickadapt", *sys.argv[1:]])
    run_benchmark(settings, command)
    print(f"wrote {settings.output} and {settings.output.with_suffix('.json')}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``bench-latency`` sub-command."""
    parser = subparsers.add_parser(
        "bench-latency",
        help="time click-to-mask, Mid- and Post-Interaction updates on a real stream (and over HTTP)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bench/latency.py``."""
    parser = argparse.ArgumentParser(prog="bench/latency.py", description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args.command_line = shlex.join(["python", "bench/latency.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run_command(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"bench/latency.py: error: {error}", file=sys.stderr)
        return 2
