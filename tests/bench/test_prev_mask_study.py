"""The previous-mask study's pieces (bench/prev_mask_study.py) on a tiny network and synthetic lesions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bench.prev_mask_study import click_curve, dice_at, foreground, training_clicks, widen_first_convolution
from torch import nn

from clickadapt.clicks.encoding import model_input
from clickadapt.data.sample import Sample
from clickadapt.evaluation.stream import evaluate_frozen
from clickadapt.models.factory import ModelConfig, build_model
from clickadapt.tasks import BRAIN
from clickadapt.training.config import ClickConfig

SIZE = 32


def tiny_network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(widths=[4, 8, 16], affine_norm=True), BRAIN.input_channels, BRAIN.num_classes)


def lesion(index: int) -> Sample:
    rng = np.random.default_rng(index)
    label = np.zeros((SIZE, SIZE), dtype=np.int64)
    top, left = rng.integers(4, 16, size=2)
    label[top : top + 10, left : left + 8] = 1
    image = (label + rng.normal(0, 0.3, label.shape)).astype(np.float32)
    return Sample(image[None], label, "brain", "synthetic", "FLAIR", f"p{index}", index, "memory")


def test_widening_keeps_the_output_whatever_the_new_channel_holds() -> None:
    network = tiny_network().eval()
    inputs = torch.randn(2, BRAIN.input_channels, SIZE, SIZE)
    with torch.no_grad():
        before = network(inputs)
        widen_first_convolution(network, 1)
        after = network(torch.cat([inputs, torch.rand(2, 1, SIZE, SIZE)], 1))
    assert torch.equal(before, after)
    first = next(module for module in network.modules() if isinstance(module, nn.Conv2d))
    assert first.in_channels == BRAIN.input_channels + 1
    assert first.weight.shape[1] == BRAIN.input_channels + 1
    with pytest.raises(ValueError, match="no Conv2d"):
        widen_first_convolution(nn.Sequential(nn.ReLU()), 1)


def test_the_study_loop_without_the_mask_is_the_package_evaluation() -> None:
    network = tiny_network().eval()
    samples = [lesion(index) for index in range(3)]
    ours = dice_at(network, samples, BRAIN, (0,), 5.0, with_mask=False)
    theirs = evaluate_frozen(network, BRAIN, samples, "oaims", 10, 0, click_sigma=5.0)
    for click in (1, 5, 10):
        assert ours[f"dice@{click}"][0] == pytest.approx(100 * theirs["lesion"][click - 1])


def test_the_mask_channel_changes_the_answer_once_it_has_weight() -> None:
    network = tiny_network().eval()
    widen_first_convolution(network, 1)
    sample = lesion(0)
    zero_weight = click_curve(network, sample, BRAIN, 0, 5.0, with_mask=True)
    first = next(module for module in network.modules() if isinstance(module, nn.Conv2d))
    with torch.no_grad():
        first.weight[:, -1] = 5.0
    assert click_curve(network, sample, BRAIN, 0, 5.0, with_mask=True) != zero_weight
    assert len(zero_weight) == 10


def test_training_clicks_feed_the_mask_before_the_last_click() -> None:
    network = tiny_network().eval()
    widen_first_convolution(network, 1)
    samples = [lesion(index) for index in range(6)]
    images = torch.stack([torch.as_tensor(s.image) for s in samples])
    labels = torch.stack([torch.as_tensor(s.label) for s in samples])
    settings = ClickConfig(max_clicks=6, iterative_clicks=3, largest_error_share=0.5)
    clicks, masks = training_clicks(network, images, labels, BRAIN, np.random.default_rng(0), settings)
    assert masks.shape == (6, 1, SIZE, SIZE)
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}
    for element, element_clicks in enumerate(clicks):
        assert 1 <= len(element_clicks) <= 6
        for click in element_clicks:
            assert click.label == samples[element].label[click.row, click.col]
        if len(element_clicks) == 1:
            assert masks[element].sum() == 0  # one click: no mask before it
    # The mask channel still has zero weight, so each element's mask must be the network's foreground with all
    # its clicks but the last (whatever mask the earlier rounds fed).
    several = [index for index in range(6) if len(clicks[index]) > 1]
    assert several
    for element in several:
        inputs = model_input(images[element], clicks[element][:-1], BRAIN.num_classes, settings.sigma)
        with torch.no_grad():
            expected = foreground(network(torch.cat([inputs, torch.zeros(1, SIZE, SIZE)])[None]).argmax(dim=1))[0]
        assert torch.equal(masks[element], expected)
    assert any(masks[element].sum() > 0 for element in several)  # not an all-background network
    assert foreground(torch.tensor([[[0, 2], [1, 0]]])).tolist() == [[[[0.0, 1.0], [1.0, 0.0]]]]
