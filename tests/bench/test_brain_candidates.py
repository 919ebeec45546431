"""The issue-13 candidates' pieces (bench/brain_candidates.py) on inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import torch
from bench.brain_candidates import GuidedLesion, LesionZoomd, MeanOfSoftmax, ZoomIn, click_peaks
from torch import nn

from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import click_maps


class Blob(nn.Module):
    """Lesion logits high where the image is bright (a stand-in network that looks at channel 0 only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lesion = 10 * (x[:, :1] - 0.5)
        return torch.cat([-lesion, lesion], 1)


def picture_with_square(top: int, left: int, side: int, size: int = 64) -> torch.Tensor:
    image = torch.zeros((1, 3, size, size))
    image[0, 0, top : top + side, left : left + side] = 1.0
    return image


def test_click_peaks_finds_the_clicks_the_maps_were_drawn_from() -> None:
    clicks = [Click(10, 12, 1), Click(40, 50, 1), Click(30, 5, 0)]
    maps = click_maps(clicks, (64, 64), 2, sigma=3.0)
    assert sorted(click_peaks(maps[1], radius=9)) == [(10, 12), (40, 50)]
    assert click_peaks(maps[0], radius=9) == [(30, 5)]


def test_the_mean_of_two_copies_of_a_network_is_the_network() -> None:
    x = picture_with_square(10, 10, 20)
    alone = Blob()(x).log_softmax(1)
    assert torch.allclose(MeanOfSoftmax([Blob(), Blob()])(x), alone.clamp_min(np.log(1e-6)), atol=1e-5)


def test_the_guided_filter_keeps_a_mask_that_follows_the_image_edges() -> None:
    x = picture_with_square(16, 16, 24)
    filtered = GuidedLesion(Blob(), radius=2, eps=1e-3)(x).argmax(1)[0]
    assert torch.equal(filtered, Blob()(x).argmax(1)[0])  # the prediction already sits on the edges


def test_zoom_in_changes_only_the_square_around_a_small_lesion_and_leaves_a_large_one() -> None:
    small = picture_with_square(20, 24, 6)
    small[0, 2] = torch.from_numpy(click_maps([Click(22, 26, 1)], (64, 64), 2, sigma=2.0)[1])
    base = Blob()(small)
    zoomed = ZoomIn(Blob(), margin=0.4, min_side=16, sigma=2.0)(small)
    changed = (zoomed != base).any(1)[0].nonzero()
    assert len(changed) > 0
    rows, cols = changed[:, 0], changed[:, 1]
    assert (
        int(rows.min()) >= 20 - 6
        and int(rows.max()) < 26 + 6
        and int(cols.min()) >= 24 - 6
        and int(cols.max()) < 30 + 6
    )
    large = picture_with_square(4, 4, 56)
    assert torch.equal(ZoomIn(Blob(), margin=0.4, min_side=16, sigma=2.0)(large), Blob()(large))


def test_lesion_zoom_crops_keep_the_whole_lesion_and_enlarge_it() -> None:
    label = np.zeros((1, 64, 64), dtype=np.uint8)
    label[0, 30:38, 20:28] = 1
    image = np.repeat(label.astype(np.float32), 1, axis=0)
    transform = LesionZoomd(prob=1.0, min_side=16)
    transform.set_random_state(0)
    for _ in range(5):
        out = transform({"image": image, "label": label})
        assert out["image"].shape == image.shape and out["label"].shape == label.shape
        assert set(np.unique(out["label"])) == {0, 1} and out["label"].dtype == label.dtype
        assert out["label"].sum() > label.sum()  # the lesion fills more of the picture
        rows, cols = np.nonzero(out["label"][0])
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert abs(int(height) - int(width)) <= 1  # still a square: the crop contained the whole lesion
