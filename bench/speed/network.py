"""The network of a latency run with its variants applied, single-forward probes and ``torch.compile``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.speed.settings import SHIPPED_WIDTHS, RunSpec
from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import DEFAULT_CLICK_SIGMA, model_input
from clickadapt.data.sample import Sample
from clickadapt.models.checkpoint import load_checkpoint
from clickadapt.models.unet import ReferenceUNet
from clickadapt.paths import resolve_model_spec
from clickadapt.tasks import TASKS, TaskSpec, get_task


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
    """The network of a run with its variants applied, its click σ, and whether it is trained.

    Raises:
        ValueError: If the checkpoint is another task's model.
    """
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


def synchronise(device: str) -> None:
    """Wait for the device's queued work (a no-op on a CPU), so that the wall clock covers it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def forward_ms(spec: RunSpec, sample: Sample, repeats: int = 5) -> float:
    """Median inference-forward time of a run's network on one sample with one click (a quick probe).

    Args:
        spec: The run whose network (with its variants) is timed.
        sample: The image; one positive click at its centre.
        repeats: Timed forwards, after one untimed warm-up forward.

    Returns:
        Milliseconds.
    """
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
        synchronise(spec.device)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]) * 1000.0)


def forward_probes(specs: Sequence[RunSpec], sample: Sample) -> list[float]:
    """:func:`forward_ms` of several variants, one after the other in this process."""
    return [forward_ms(spec, sample) for spec in specs]


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
            synchronise(device)
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
