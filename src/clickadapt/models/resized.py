"""Run a network on a smaller grid than the image it is given, and return logits at the image's size.

A model trained at ``input_size`` (e.g. 128 px for brain slices stored at 256 px) sees a
bilinearly down-sampled copy of its input — image channels and click maps alike — and its logits
are bilinearly up-sampled back before anything else (argmax, loss, metrics) looks at them. Edges
stay smooth because the *logits* are interpolated, not the mask. Gradients flow through both
resamplings, so training, Mid- and Post-Interaction updates and TENT work unchanged at the image's
own size.
"""

from __future__ import annotations

import torch
from torch import nn


class ResizedInputNetwork(nn.Module):
    """Wrap ``network`` so that it runs with the longer image side resampled to ``input_size``.

    Args:
        network: Maps ``(B, C, h, w)`` to logits ``(B, K, h, w)`` for any ``h, w``.
        input_size: Length of the longer side the network runs at; the shorter side keeps the aspect
            ratio. An input already that size passes through untouched.
    """

    def __init__(self, network: nn.Module, input_size: int) -> None:
        super().__init__()
        if input_size < 8:
            raise ValueError(f"input_size must be at least 8 pixels, got {input_size}")
        self.network = network
        self.input_size = input_size

    def network_grid(self, height: int, width: int) -> tuple[int, int]:
        """The ``(h, w)`` the network runs at for an input of ``(height, width)``."""
        scale = self.input_size / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` to logits ``(B, K, H, W)``, running the network at :meth:`network_grid`."""
        height, width = int(x.shape[-2]), int(x.shape[-1])
        grid = self.network_grid(height, width)
        if grid == (height, width):
            result: torch.Tensor = self.network(x)
            return result
        shrinking = grid[0] < height
        small = nn.functional.interpolate(x, size=grid, mode="bilinear", align_corners=False, antialias=shrinking)
        logits = self.network(small)
        return nn.functional.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
