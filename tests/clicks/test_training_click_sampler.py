"""Training-time click simulation (method.md §6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from clickadapt.clicks.click import Click
from clickadapt.clicks.simulators import _component_refs
from clickadapt.clicks.training_sampler import _class_queues, sample_training_clicks
from clickadapt.models.unet import ReferenceUNet

NUM_CLASSES = 3
SIZE = 32


def _fundus_like_batch(batch_size: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Discs (rim = 1) with cups (2) at different places, plus a stray rim blob in element 0."""
    labels = torch.zeros((batch_size, SIZE, SIZE), dtype=torch.int64)
    for index in range(batch_size):
        top = 4 + 3 * index
        labels[index, top : top + 16, 6 : 6 + 16] = 1
        labels[index, top + 5 : top + 11, 11:17] = 2
    labels[0, 26:29, 26:29] = 1
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((batch_size, 3, SIZE, SIZE), generator=generator) + labels[:, None].float()
    return images, labels


class ConstantModel(nn.Module):
    """Predicts one class everywhere; records the inputs it was called with."""

    def __init__(self, predicted_class: int, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.predicted_class = predicted_class
        self.num_classes = num_classes
        self.calls: list[torch.Tensor] = []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.calls.append(inputs)
        batch, _, height, width = inputs.shape
        logits = torch.zeros((batch, self.num_classes, height, width))
        logits[:, self.predicted_class] = 1.0
        return logits


def _assert_valid(clicks: list[list[Click]], labels: torch.Tensor, max_clicks: int) -> None:
    assert len(clicks) == labels.shape[0]
    for element_clicks, label in zip(clicks, labels, strict=True):
        assert 1 <= len(element_clicks) <= max_clicks
        for click in element_clicks:
            click.validate((SIZE, SIZE), NUM_CLASSES)
            assert click.label == int(label[click.row, click.col])


def test_clicks_from_a_real_network_are_valid_and_deterministic_under_a_seed() -> None:
    torch.manual_seed(0)
    model = ReferenceUNet(3 + NUM_CLASSES, NUM_CLASSES, widths=[4, 8, 16])
    images, labels = _fundus_like_batch()
    first = sample_training_clicks(model, images, labels, NUM_CLASSES, np.random.default_rng(11), max_clicks=6)
    again = sample_training_clicks(model, images, labels, NUM_CLASSES, np.random.default_rng(11), max_clicks=6)
    other = sample_training_clicks(model, images, labels, NUM_CLASSES, np.random.default_rng(12), max_clicks=6)
    _assert_valid(first, labels, max_clicks=6)
    assert first == again
    assert first != other


def test_budget_covers_one_to_max_clicks() -> None:
    images, labels = _fundus_like_batch()
    model = ConstantModel(predicted_class=0)
    lengths = set()
    for seed in range(12):
        clicks = sample_training_clicks(model, images, labels, NUM_CLASSES, np.random.default_rng(seed), max_clicks=3)
        _assert_valid(clicks, labels, max_clicks=3)
        lengths.update(len(element_clicks) for element_clicks in clicks)
    assert lengths == {1, 2, 3}


def test_first_click_is_an_oaims_click_in_the_largest_foreground_component() -> None:
    images, labels = _fundus_like_batch()
    clicks = sample_training_clicks(ConstantModel(0), images, labels, NUM_CLASSES, np.random.default_rng(0))
    for index, element_clicks in enumerate(clicks):
        first = element_clicks[0]
        top = 4 + 3 * index
        assert top <= first.row < top + 16 and 6 <= first.col < 22  # the disc, never the stray blob
        assert first.label == int(labels[index, first.row, first.col]) in (1, 2)


def test_one_batched_forward_with_the_first_click_maps() -> None:
    images, labels = _fundus_like_batch()
    model = ConstantModel(0)
    rng = np.random.default_rng(5)
    clicks = sample_training_clicks(model, images, labels, NUM_CLASSES, rng, max_clicks=10, click_sigma=2.0)
    assert len(model.calls) == 1
    inputs = model.calls[0]
    assert inputs.shape == (3, 3 + NUM_CLASSES, SIZE, SIZE)
    assert torch.equal(inputs[:, :3], images)
    for index, element_clicks in enumerate(clicks):
        first = element_clicks[0]
        assert inputs[index, 3 + first.label, first.row, first.col] == pytest.approx(1.0)
        assert inputs[index, 3:].sum() > 0


def test_forward_is_skipped_when_every_budget_is_one_click() -> None:
    images, labels = _fundus_like_batch()
    model = ConstantModel(0)
    clicks = sample_training_clicks(model, images, labels, NUM_CLASSES, np.random.default_rng(0), max_clicks=1)
    assert model.calls == []
    assert [len(element_clicks) for element_clicks in clicks] == [1, 1, 1]


def test_correction_clicks_fall_in_error_components_or_on_ground_truth_of_their_class() -> None:
    images, labels = _fundus_like_batch(batch_size=1)
    # Predicting "rim" everywhere: errors are background (true 0) and cup (true 2) pixels; class-1 clicks
    # have no error left and fall back to a random rim pixel.
    clicks = sample_training_clicks(
        ConstantModel(1),
        images,
        labels,
        NUM_CLASSES,
        np.random.default_rng(3),
        max_clicks=10,
        include_first_click=False,
    )
    _assert_valid(clicks, labels, max_clicks=10)
    assert {click.label for click in clicks[0]} <= {0, 1, 2}


def test_large_components_give_extra_entries_by_halving_the_area() -> None:
    label = np.zeros((40, 40), dtype=np.int64)
    label[0:20, 0:20] = 1  # 400 px missed: entries 400, 200, 100
    label[30:40, 30:40] = 1  # 100 px missed: one entry
    prediction = np.zeros_like(label)
    queues = _class_queues(_component_refs(label, prediction), num_classes=2, max_entries=10, split_area=150)
    assert queues[0] == []
    assert [area for area, _ in queues[1]] == [400, 200, 100, 100]
    large, small = queues[1][0][1], queues[1][3][1]
    assert [ref for _, ref in queues[1]] == [large, large, large, small]  # ties: the larger component first
    assert (large.area, small.area) == (400, 100)
    per_class = _class_queues(
        _component_refs(label, prediction), num_classes=2, max_entries=10, split_area={0: 150, 1: 80}
    )
    assert [area for area, _ in per_class[1]] == [400, 200, 100, 100, 50, 50]
    capped = _class_queues(_component_refs(label, prediction), num_classes=2, max_entries=1, split_area=150)
    assert [area for area, _ in capped[1]] == [400, 200, 100]  # only the largest component is expanded


def test_component_refs_can_keep_the_largest_components_per_true_class() -> None:
    label = np.zeros((30, 30), dtype=np.int64)
    prediction = np.zeros_like(label)
    label[0:5, 0:5] = 1  # true 1, area 25
    label[10:13, 10:13] = 1  # true 1, area 9
    label[20:21, 20:22] = 1  # true 1, area 2
    prediction[25:29, 0:4] = 1  # true 0, area 16
    prediction[0:1, 25:27] = 1  # true 0, area 2
    refs = _component_refs(label, prediction, max_per_true_class=2)
    assert [(ref.true_class, ref.area) for ref in refs] == [(1, 25), (0, 16), (1, 9), (0, 2)]


def test_empty_foreground_label_gets_a_background_first_click() -> None:
    images = torch.rand((1, 3, SIZE, SIZE))
    labels = torch.zeros((1, SIZE, SIZE), dtype=torch.int64)
    clicks = sample_training_clicks(ConstantModel(0), images, labels, NUM_CLASSES, np.random.default_rng(0))
    _assert_valid(clicks, labels, max_clicks=10)
    assert all(click.label == 0 for click in clicks[0])


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (torch.rand(3, SIZE, SIZE), torch.zeros((1, SIZE, SIZE), dtype=torch.int64), "images must be"),
        (torch.rand(1, 3, SIZE, SIZE), torch.zeros((SIZE, SIZE), dtype=torch.int64), "labels must be"),
        (torch.rand(2, 3, SIZE, SIZE), torch.zeros((1, SIZE, SIZE), dtype=torch.int64), "do not match"),
        (torch.rand(1, 3, SIZE, SIZE), torch.full((1, SIZE, SIZE), 3, dtype=torch.int64), "outside 0..2"),
    ],
)
def test_bad_input_is_rejected(images: torch.Tensor, labels: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_training_clicks(ConstantModel(0), images, labels, NUM_CLASSES, np.random.default_rng(0))


class OversizedCupModel(nn.Module):
    """Predicts the whole disc as cup (2): the systematic error of the first shipped fundus model."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        disc = inputs[:, 0] > 1.0  # _fundus_like_batch adds the label to the image: disc pixels are > 1
        logits = torch.zeros((inputs.shape[0], NUM_CLASSES, *inputs.shape[-2:]))
        logits[:, 0] = (~disc).float()
        logits[:, 2] = disc.float()
        return logits


def _rim_inside_predicted_cup_share(largest_error_share: float) -> float:
    images, labels = _fundus_like_batch(batch_size=1)
    images[0, 0, 26:29, 26:29] = 0.0  # the stray rim blob is not part of the predicted disc
    rim_in_cup = total = 0
    for seed in range(40):
        clicks = sample_training_clicks(
            OversizedCupModel(),
            images,
            labels,
            NUM_CLASSES,
            np.random.default_rng(seed),
            max_clicks=6,
            include_first_click=False,
            largest_error_share=largest_error_share,
        )
        _assert_valid(clicks, labels, max_clicks=6)
        click = clicks[0][0]  # the first correction click: an error entry is always left for it
        total += 1
        inside_disc = 4 <= click.row < 20 and 6 <= click.col < 22
        rim_in_cup += click.label == 1 and inside_disc
    return rim_in_cup / total


def test_largest_error_share_places_clicks_like_the_evaluation_user() -> None:
    # The largest error is the rim the model calls cup; a uniform class choice puts the first correction
    # there in about a third of the images (a rim click elsewhere is impossible: all rim is predicted cup,
    # so a uniform rim click lands there too only when class 1 is drawn), the user-like choice always.
    uniform = _rim_inside_predicted_cup_share(0.0)
    user_like = _rim_inside_predicted_cup_share(1.0)
    assert 0.15 < uniform < 0.6
    assert user_like == 1.0


def test_largest_error_share_outside_zero_one_is_refused() -> None:
    images, labels = _fundus_like_batch(batch_size=1)
    with pytest.raises(ValueError, match="largest_error_share"):
        sample_training_clicks(
            ConstantModel(0), images, labels, NUM_CLASSES, np.random.default_rng(0), largest_error_share=1.5
        )
