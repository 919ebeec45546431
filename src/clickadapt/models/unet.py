"""The reference backbone of method.md §3: a plain 2D U-Net with InstanceNorm and skip concatenation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

REFERENCE_WIDTHS: tuple[int, ...] = (12, 72, 144, 288, 576)
"""Widths of the paper's network (about 9.8 M parameters); the last one is the bottleneck."""


class InstanceNorm(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (no running statistics) computed by ``group_norm`` with one group per channel.

    The same function, parameters and state-dict keys as ``nn.InstanceNorm2d``, so checkpoints and
    TENT (which adapts ``nn.InstanceNorm2d`` affine parameters) are unaffected. PyTorch's instance norm
    repeats the input into a batch-norm call; ``group_norm`` normalises in place of that and, unlike it,
    keeps a channels-last input channels-last (see :meth:`ReferenceUNet.forward`). Its effect on the
    click latency is the *untuned network* row of ``bench/results/latency.md`` (``python bench/latency.py``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each channel of each sample of ``(B, C, H, W)`` to zero mean and unit variance."""
        if self.track_running_stats:
            return super().forward(x)
        return nn.functional.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


class DoubleConv(nn.Sequential):
    """Two (3×3 conv → InstanceNorm without affine → ReLU) layers."""

    def __init__(self, in_channels: int, out_channels: int, affine_norm: bool = False) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            InstanceNorm(out_channels, affine=affine_norm),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            InstanceNorm(out_channels, affine=affine_norm),
            nn.ReLU(inplace=True),
        )


class ReferenceUNet(nn.Module):
    """Plain 2D U-Net: ``len(widths) - 1`` down-sampling levels and a bottleneck.

    Args:
        in_channels: Image channels plus one click map per class.
        out_channels: Number of classes (logits per pixel).
        widths: Channels per level, the last being the bottleneck. The paper uses
            ``(12, 72, 144, 288, 576)``.
        affine_norm: Give InstanceNorm learnable affine parameters (needed by TENT, which adapts only
            normalisation affine parameters; the paper's network has none).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        widths: Sequence[int] = REFERENCE_WIDTHS,
        affine_norm: bool = False,
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths needs at least two entries (one level and a bottleneck), got {list(widths)}")
        self.down_blocks = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.down_blocks.append(DoubleConv(channels, width, affine_norm))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(channels, widths[-1], affine_norm)
        self.up_samplers = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        channels = widths[-1]
        for width in reversed(widths[:-1]):
            self.up_samplers.append(nn.ConvTranspose2d(channels, width, kernel_size=2, stride=2))
            self.up_blocks.append(DoubleConv(2 * width, width, affine_norm))
            channels = width
        self.head = nn.Conv2d(channels, out_channels, kernel_size=1)
        self.levels = len(widths) - 1
        self.channels_last_inference = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` to logits ``(B, out_channels, H, W)``.

        ``H`` and ``W`` need not be multiples of ``2 ** levels``: the input is padded and the output
        cropped back. Without autograd (``torch.inference_mode`` / ``torch.no_grad``) the input is made
        channels-last, which oneDNN's convolutions run faster on a CPU (together with the group-norm
        ``InstanceNorm``: one forward 43 → 29 ms at 256×256 and 158 → 101 ms at 512×512 on the 2-core
        machine, *precision and layout probes* of ``bench/results/latency.md``); the logits are then
        channels-last too. With autograd the layout is left alone: channels-last weights made the
        Mid-Interaction click slower there (``channels_last weights`` rows: 194 vs 167 ms).
        Set ``channels_last_inference = False`` to keep the contiguous layout throughout.
        """
        if self.channels_last_inference and not torch.is_grad_enabled():
            x = x.contiguous(memory_format=torch.channels_last)
        height, width = x.shape[-2:]
        multiple = 2**self.levels
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
        skips = []
        for block in self.down_blocks:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up_samplers, self.up_blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        logits: torch.Tensor = self.head(x)
        return logits[..., :height, :width]
