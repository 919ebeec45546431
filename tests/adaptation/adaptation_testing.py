"""Small shared helpers of the adaptation tests: tiny networks, synthetic images, state comparison."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.strategies import make_strategy
from clickadapt.clicks.click import Click
from clickadapt.models.unet import ReferenceUNet
from clickadapt.tasks import TaskSpec

SIZE = 32
WIDTHS = [4, 8, 16]
# A lesion-like disk around (16, 16) and background corrections elsewhere.
BRAIN_CLICKS = [Click(16, 16, 1), Click(3, 3, 0), Click(20, 13, 1), Click(28, 27, 0), Click(12, 19, 1)]
FUNDUS_CLICKS = [Click(16, 16, 2), Click(16, 9, 1), Click(3, 3, 0), Click(22, 16, 1)]


def one_torch_thread() -> Iterator[None]:
    """Run a test with one intra-op thread (tiny networks gain nothing from more on a shared machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def tiny_network(task: TaskSpec, seed: int = 0, affine_norm: bool = True) -> ReferenceUNet:
    """A seeded ``ReferenceUNet(widths=[4, 8, 16])`` for ``task``."""
    torch.manual_seed(seed)
    return ReferenceUNet(task.input_channels, task.num_classes, WIDTHS, affine_norm=affine_norm)


def tiny_state(task: TaskSpec, strategy: str, seed: int = 0, **overrides: Any) -> ModelState:
    """A ModelState on a tiny seeded network with the named strategy."""
    return ModelState(tiny_network(task, seed), task, make_strategy(strategy, task, **overrides))


def synthetic_image(task: TaskSpec, seed: int = 0, size: int = SIZE) -> np.ndarray:
    """A bright disk of radius 7 at the centre on Gaussian noise, ``(C, size, size)`` float32."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    disk = ((rows - size // 2) ** 2 + (cols - size // 2) ** 2 <= 49).astype(np.float32)
    image = 0.3 * rng.normal(size=(task.image_channels, size, size)) + disk[None]
    return image.astype(np.float32)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A private copy of the model's state dict."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def equal_states(first: Any, second: Any) -> bool:
    """Bit-exact equality of nested dicts / lists / tensors / numbers."""
    if isinstance(first, torch.Tensor):
        return isinstance(second, torch.Tensor) and first.dtype == second.dtype and torch.equal(first, second)
    if isinstance(first, dict):
        return (
            isinstance(second, dict)
            and first.keys() == second.keys()
            and all(equal_states(first[key], second[key]) for key in first)
        )
    if isinstance(first, list | tuple):
        return (
            isinstance(second, list | tuple)
            and len(first) == len(second)
            and all(equal_states(a, b) for a, b in zip(first, second, strict=True))
        )
    return bool(first == second)
