"""The public predictor: five calls on the shipped models, masks in the image's own geometry, smooth edges."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import clickadapt
from clickadapt.adaptation.model_state import ModelState
from clickadapt.clicks.encoding import model_input
from clickadapt.data.prepare import Geometry, logits_to_source, mask_to_source, source_to_model_point
from clickadapt.models.checkpoint import CheckpointMeta, load_checkpoint
from clickadapt.models.factory import ModelConfig
from clickadapt.paths import shipped_model_path
from clickadapt.predictor import Predictor
from clickadapt.tasks import BRAIN, FUNDUS

REPOSITORY = Path(__file__).resolve().parents[1]
needs_shipped = pytest.mark.skipif(
    not (shipped_model_path("brain").is_file() and shipped_model_path("fundus").is_file()),
    reason="the shipped models are not built",
)


def brain_slice(size: int = 240) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.float32)
    image[(rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (0.4 * size) ** 2] = 100.0
    image[(rows - 100) ** 2 + (cols - 130) ** 2 < 20**2] = 220.0
    return image


def fundus_crop(size: int = 700) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    distance = (rows - size / 2) ** 2 + (cols - size / 2) ** 2
    image = np.zeros((size, size, 3), np.uint8)
    image[...] = (120, 50, 30)
    image[distance < (0.2 * size) ** 2] = (230, 180, 120)
    image[distance < (0.1 * size) ** 2] = (250, 230, 200)
    return image


@needs_shipped
def test_library_example_runs(tmp_path: Path) -> None:
    example = runpy.run_path(str(REPOSITORY / "docs" / "library_example.py"))
    final = example["main"](example["synthetic_slice"](), tmp_path / "adapted.pt")
    assert final.shape == (240, 240) and final.dtype == np.int64
    assert load_checkpoint(tmp_path / "adapted.pt").task.name == "brain"


@needs_shipped
def test_five_calls_on_a_240_grey_image_with_the_brain_model(tmp_path: Path) -> None:
    predictor = clickadapt.load_predictor("brain", adapt="oaims", safety=True)
    sigma = predictor.meta.preprocessing.click_sigma  # the shipped brain model's click maps: σ 2 px
    assert sigma == 2.0 and predictor.session.config.click_sigma == sigma and predictor.safety is not None
    assert predictor.safety.click_sigma == sigma
    image = brain_slice()
    predictor.set_image(image)
    first = predictor.add_click(100, 130, "lesion")
    assert first.shape == image.shape and first.dtype == np.int64 and set(np.unique(first)) <= {0, 1}
    second = predictor.add_click(5, 5, 0)
    assert second.shape == image.shape and predictor.clicks == [(100, 130, 1), (5, 5, 0)]
    np.testing.assert_array_equal(predictor.undo(), first)  # the click's update is undone bit for bit
    probabilities = predictor.probabilities()
    assert probabilities.shape == (2, *image.shape)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=0), first)
    final = predictor.finish()
    np.testing.assert_array_equal(final, first)
    predictor.save(tmp_path / "adapted.pt")
    again = clickadapt.load_predictor(tmp_path / "adapted.pt", adapt="frozen", safety=False)
    assert again.model_version == predictor.model_version


@needs_shipped
def test_five_calls_on_a_700_rgb_fundus_crop_with_the_fundus_model() -> None:
    predictor = clickadapt.load_predictor("fundus", adapt="oaims", safety=True)
    image = fundus_crop()
    predictor.set_image(image)
    mask = predictor.add_click(350, 350, "cup")
    assert mask.shape == (700, 700) and mask.dtype == np.int64 and set(np.unique(mask)) <= {0, 1, 2}
    mask = predictor.add_click(350, 470, "rim")
    assert predictor.probabilities().shape == (3, 700, 700)
    edited = mask.copy()
    edited[:10] = 0
    np.testing.assert_array_equal(predictor.finish(final_mask=edited), edited)
    assert predictor.safety is not None and predictor.safety.images_seen == 1  # finish reached the safety layer


class ClickDisc(nn.Module):
    """Logits that are a fixed function of the click maps: a soft disc around each click."""

    def __init__(self, image_channels: int) -> None:
        super().__init__()
        self.image_channels = image_channels
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        maps = inputs[:, self.image_channels :]
        logits = self.scale * (maps - 0.3)
        logits[:, 0] = 0.0
        return logits


def disc_predictor(size: int = 64) -> Predictor:
    state = ModelState(ClickDisc(FUNDUS.image_channels), FUNDUS)
    meta = CheckpointMeta(task="fundus", model=ModelConfig(), preprocessing={"size": size, "click_sigma": 5.0})
    return Predictor(state, meta)


def test_masks_are_upsampled_from_logits_and_differ_from_nearest_only_at_boundaries() -> None:
    predictor = disc_predictor()
    predictor.set_image(fundus_crop())
    smooth = predictor.add_click(350, 350, "cup")
    geometry = predictor._geometry
    assert geometry is not None and predictor.session.prediction is not None
    nearest = mask_to_source(predictor.session.prediction, geometry).astype(np.int64)
    assert smooth.shape == nearest.shape == (700, 700)
    assert (smooth == 2).sum() > 1000  # a real disc, not an empty mask
    differ = smooth != nearest
    assert differ.any()  # not a nearest-neighbour copy
    reach = math.ceil(700 / 64)  # one model pixel in image pixels
    padded = np.pad(nearest, reach, mode="edge")
    window = np.lib.stride_tricks.sliding_window_view(padded, (2 * reach + 1, 2 * reach + 1))
    boundary = window.min(axis=(-1, -2)) != window.max(axis=(-1, -2))
    assert not (differ & ~boundary).any()  # every difference lies within one model pixel of an edge
    assert differ.sum() < 0.5 * boundary.sum()


def test_clicks_are_mapped_onto_the_model_grid() -> None:
    padded = Geometry(kind="pad-crop", source_shape=(240, 240), size=256)
    assert source_to_model_point(0, 0, padded) == (8, 8)
    cropped = Geometry(kind="pad-crop", source_shape=(300, 260), size=256)
    assert source_to_model_point(22, 2, cropped) == (0, 0)
    with pytest.raises(ValueError, match="cropped away"):
        source_to_model_point(10, 100, cropped)
    with pytest.raises(ValueError, match="outside"):
        source_to_model_point(300, 0, cropped)
    resized = Geometry(kind="resize", source_shape=(700, 350), size=64)
    assert source_to_model_point(699, 349, resized) == (63, 63)
    assert source_to_model_point(350, 175, resized) == (32, 32)


def test_pad_crop_logits_map_back_like_the_mask() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 32, 32, generator=generator)
    for source_shape in ((20, 40), (40, 20), (32, 32)):
        geometry = Geometry(kind="pad-crop", source_shape=source_shape, size=32)
        mapped = logits_to_source(logits, geometry)
        assert tuple(mapped.shape) == (2, *source_shape)
        expected = mask_to_source(logits.argmax(dim=0).numpy(), geometry)
        np.testing.assert_array_equal(mapped.argmax(dim=0).numpy(), expected)


def test_the_predictor_feeds_the_network_what_the_session_would() -> None:
    predictor = disc_predictor(size=32)
    image = fundus_crop(64)
    predictor.set_image(image)
    predictor.add_click(40, 20, 1)
    assert predictor.session.clicks[0].row == 20 and predictor.session.clicks[0].col == 10
    session_image = predictor.session.image
    assert session_image is not None and tuple(session_image.shape) == (3, 32, 32)
    expected = ClickDisc(3)(model_input(session_image, predictor.session.clicks, 3, 5.0).unsqueeze(0))
    assert predictor.session.logits is not None
    torch.testing.assert_close(predictor.session.logits, expected)


def test_bad_inputs_are_refused_with_a_reason(tmp_path: Path) -> None:
    predictor = disc_predictor()
    with pytest.raises(ValueError, match="no image is open"):
        predictor.add_click(1, 1, 1)
    with pytest.raises(ValueError, match=r"\(H, W\) grey or \(H, W, 3\) RGB"):
        predictor.set_image(np.zeros((4, 20, 20)))
    with pytest.raises(FileNotFoundError):
        predictor.set_image(tmp_path / "absent.png")
    predictor.set_image(fundus_crop(100))
    with pytest.raises(ValueError, match="unknown class"):
        predictor.add_click(1, 1, "lesion")
    with pytest.raises(ValueError, match="not a class"):
        predictor.add_click(1, 1, 7)
    with pytest.raises(ValueError, match="no prediction yet"):
        predictor.probabilities()
    predictor.add_click(50, 50, "cup")
    with pytest.raises(ValueError, match="shape"):
        predictor.finish(np.zeros((10, 10), np.int64))


def test_set_image_reads_a_nifti_slice(tmp_path: Path) -> None:
    import nibabel as nib

    volume = np.zeros((40, 30, 5), np.float32)
    volume[10:20, 10:20, 2] = 5.0
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "volume.nii.gz")
    state = ModelState(ClickDisc(BRAIN.image_channels), BRAIN)
    predictor = Predictor(state, CheckpointMeta(task="brain", model=ModelConfig(), preprocessing={"size": 48}))
    predictor.set_image(tmp_path / "volume.nii.gz", slice_index=2)
    assert predictor.image_shape == (30, 40)  # the upright axial slice
    assert predictor.add_click(15, 15, "lesion").shape == (30, 40)
