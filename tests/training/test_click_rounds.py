"""Training clicks in rounds: the late clicks answer the model's prediction with the earlier clicks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from clickadapt.clicks.training_sampler import sample_training_clicks
from clickadapt.models.unet import ReferenceUNet
from clickadapt.training.click_rounds import largest_error_click, sample_clicks_in_rounds

SIZE = 48
# Three separate lesions, largest first: a user clicks A, then B, then C.
BLOCKS = {"A": (slice(4, 20), slice(4, 20)), "B": (slice(28, 40), slice(4, 16)), "C": (slice(30, 38), slice(30, 38))}


def _label() -> torch.Tensor:
    label = torch.zeros((SIZE, SIZE), dtype=torch.int64)
    for rows, cols in BLOCKS.values():
        label[rows, cols] = 1
    return label


class PaintsClickedBlocks(nn.Module):
    """Segments exactly the lesions that hold a foreground click; records how often it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        foreground_clicks = inputs[:, 2]  # channels: image, background click map, foreground click map
        logits = torch.zeros((inputs.shape[0], 2, SIZE, SIZE))
        logits[:, 0] = 1.0
        for rows, cols in BLOCKS.values():
            clicked = foreground_clicks[:, rows, cols].amax(dim=(1, 2)) > 0.99
            logits[clicked, 1, rows, cols] = 2.0
        return logits


def _block_of(row: int, col: int) -> str:
    for name, (rows, cols) in BLOCKS.items():
        if rows.start <= row < rows.stop and cols.start <= col < cols.stop:
            return name
    return "background"


def test_iterative_clicks_follow_the_remaining_error_as_a_user_would() -> None:
    labels = _label()[None].repeat(16, 1, 1)
    images = labels[:, None].float()
    model = PaintsClickedBlocks()
    clicks = sample_clicks_in_rounds(
        model, images, labels, 2, np.random.default_rng(0), max_clicks=3, click_sigma=2.0, iterative_clicks=2
    )
    budgets = {len(element) for element in clicks}
    assert budgets == {1, 2, 3}, "the drawn budgets must be kept"
    for element in clicks:
        # First click on the largest lesion; each later click on the largest lesion not yet segmented.
        assert [_block_of(c.row, c.col) for c in element] == ["A", "B", "C"][: len(element)]
        assert all(click.label == 1 for click in element)
    # One forward of the paper sampler (first-click prediction), then one per iterative round.
    assert model.calls == 1 + 2


def test_without_iterative_clicks_the_paper_sampler_is_unchanged() -> None:
    torch.manual_seed(0)
    model = ReferenceUNet(1 + 2, 2, widths=[4, 8])
    labels = _label()[None].repeat(4, 1, 1)
    images = torch.rand((4, 1, SIZE, SIZE))
    ours = sample_clicks_in_rounds(model, images, labels, 2, np.random.default_rng(5), max_clicks=6)
    paper = sample_training_clicks(model, images, labels, 2, np.random.default_rng(5), max_clicks=6)
    assert ours == paper


def test_a_perfect_prediction_ends_the_budget_early_and_bad_rounds_are_refused() -> None:
    label = np.zeros((8, 8), dtype=np.int64)
    label[2:5, 2:5] = 1
    assert largest_error_click(label, label.copy(), np.random.default_rng(0)) is None
    click = largest_error_click(label, np.zeros_like(label), np.random.default_rng(0))
    assert click is not None and click.label == 1 and label[click.row, click.col] == 1
    with pytest.raises(ValueError, match="iterative_clicks"):
        sample_clicks_in_rounds(
            nn.Identity(),
            torch.zeros((1, 1, 8, 8)),
            torch.zeros((1, 8, 8), dtype=torch.int64),
            2,
            np.random.default_rng(0),
            iterative_clicks=-1,
        )
