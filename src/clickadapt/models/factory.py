"""Build a network from a typed description: the reference U-Net or any MONAI network by name."""

from __future__ import annotations

from typing import Any

import monai.networks.nets as monai_nets
from pydantic import BaseModel, Field
from torch import nn

from clickadapt.models.resized import ResizedInputNetwork
from clickadapt.models.unet import REFERENCE_WIDTHS, ReferenceUNet


class ModelConfig(BaseModel):
    """Architecture of a segmentation network.

    Attributes:
        name: ``"reference-unet"`` for :class:`ReferenceUNet`, or the class name of a network in
            ``monai.networks.nets`` (e.g. ``"BasicUNet"``, ``"UNet"``, ``"SegResNet"``).
        widths: Level widths of the reference U-Net (ignored for MONAI networks).
        affine_norm: Learnable affine parameters in InstanceNorm (reference U-Net only).
        arguments: Extra constructor arguments for a MONAI network; ``spatial_dims``, ``in_channels``
            and ``out_channels`` are filled in.
        input_size: Run the network with the image's longer side resampled to this many pixels and
            return logits at the image's own size (:class:`~clickadapt.models.resized.ResizedInputNetwork`);
            ``None`` runs it at the image's size.
    """

    name: str = "reference-unet"
    widths: list[int] = Field(default_factory=lambda: list(REFERENCE_WIDTHS))
    affine_norm: bool = False
    arguments: dict[str, Any] = Field(default_factory=dict)
    input_size: int | None = Field(None, ge=8)


def build_model(config: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    """Construct an untrained network.

    Args:
        config: Architecture description.
        in_channels: Image channels plus click maps.
        out_channels: Number of classes.

    Raises:
        ValueError: If ``config.name`` is neither ``"reference-unet"`` nor a MONAI network.
    """
    network = _build_network(config, in_channels, out_channels)
    return network if config.input_size is None else ResizedInputNetwork(network, config.input_size)


def _build_network(config: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    if config.name == "reference-unet":
        return ReferenceUNet(in_channels, out_channels, config.widths, config.affine_norm)
    network_class = getattr(monai_nets, config.name, None)
    if network_class is None or not isinstance(network_class, type) or not issubclass(network_class, nn.Module):
        raise ValueError(f"unknown model name {config.name!r}: neither 'reference-unet' nor in monai.networks.nets")
    arguments: dict[str, Any] = {"spatial_dims": 2, "in_channels": in_channels, "out_channels": out_channels}
    arguments.update(config.arguments)
    model: nn.Module = network_class(**arguments)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
