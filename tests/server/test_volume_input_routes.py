"""One slice of one NIfTI volume gets the same model input through every door (clickadapt.volume_input).

The doors: the data readers (training and benchmarks), ``Predictor.set_image(path, slice)`` (the library),
the web server (``prepare_source``, and a NIfTI uploaded through its page's API), the MONAI Label ``infer``
route (3D Slicer; the slice it stores in the datastore is what the model learns from) and ``VolumeSession``;
each with the checkpoint's own clipping percentiles (the web page's upload used the default ones until
2026-12-02). Before they shared one preparation (max
|difference| to the reader's input on the first, largest-lesion and last lesion slice of the first two BRATS
test patients and MSLUB patient07): the library z-scored the slice with its own statistics (BRATS 1.1-1.9
standard deviations, MSLUB 3.4); the MONAI Label route and ``VolumeSession`` counted every non-zero voxel as
brain, which for BRATS (whose background is a negative constant after its preprocessing) is every voxel
(2.0-2.7 sd); the server counted every voxel of an MSLUB volume as brain (3.5 sd: its background is 0, but a
few thousand resampled voxels are below 0, so the minimum is not the background).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from server_helpers import synthetic_brain_slice, write_tiny_checkpoint

import clickadapt
from clickadapt.data.base import LoadUnit
from clickadapt.data.brain import MASK_THRESHOLD, BratsReader, MslubReader, volume_samples
from clickadapt.data.files import axial_slice, read_nifti
from clickadapt.data.registry import DatasetConfig
from clickadapt.data.sample import Sample
from clickadapt.server.app import create_app
from clickadapt.server.images import decode_file, prepare_source
from clickadapt.server.settings import ServerSettings
from clickadapt.tasks import BRAIN
from clickadapt.volume_input import VolumeIntensities, prepare_volume_slice, volume_background
from clickadapt.volumes import ViewPoint, VolumeOrientation, VolumeSession, read_volume

SIZE = 64
"""The test model's input side (the volumes' slices are centre cropped to it)."""
OTHER_CLIP = (5.0, 95.0)
"""A checkpoint's brain clipping range other than the default (0.5, 99.5): every door must use the model's."""
REAL_SIZE = 256
"""The shipped brain model's input side (BRATS's 240 × 240 slices are padded to it)."""
ATOL = 1e-5
BRATS_MASK_BOUND = 0.05
"""Largest |difference| (standard deviations) between the BRATS reader's slices and every other door's.

The reader takes the brain from the dataset's ``brainmask.nii.gz``; a user's file has none, so the other
doors take all but the volume's background value (its minimum). The dataset's mask also holds a few thousand
in-brain voxels at that minimum (T1c pat0001: ~4k), which changes the statistics a little (measured: 0.044 sd
T1c pat0001, 0.023 T1c pat0002, 0.0 FLAIR). With the dataset's mask given, the doors are identical
(:func:`test_real_volume_slices_are_the_same_model_input_through_every_door`)."""


@dataclass
class Door:
    """The model input of one slice through each door, by name."""

    inputs: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {size: write_tiny_checkpoint(folder / f"tiny{size}.pt", size=size) for size in (SIZE, REAL_SIZE)}


@pytest.fixture(scope="module")
def other_clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("models") / "clip.pt", size=SIZE, clip_percentiles=OTHER_CLIP)


def s_axis(path: Path) -> tuple[VolumeOrientation, int]:
    """The volume's orientation and the file axis its axial (S) slices are taken across."""
    volume = read_volume(path)
    orientation = VolumeOrientation(volume.shape, volume.affine)
    axis = int(np.flatnonzero(orientation.to_slicing[:, 0] == 2)[0])
    return orientation, axis


def file_index(orientation: VolumeOrientation, axis: int, las_index: int) -> int:
    """The index along file axis ``axis`` (the one closest to S) of axial slice ``las_index`` (the readers')."""
    flipped = orientation.to_slicing[axis, 1] == -1
    return orientation.shape[axis] - 1 - las_index if flipped else las_index


def file_voxel(orientation: VolumeOrientation, axis: int, las_index: int) -> tuple[int, int, int]:
    """A voxel (file order) in the middle of axial slice ``las_index`` (the readers' index along S)."""
    rows, cols = orientation.slice_shape(axis)
    return orientation.view_to_voxel(ViewPoint(axis, file_index(orientation, axis, las_index), rows // 2, cols // 2))


def doors(
    path: Path,
    slices: list[int],
    checkpoint: Path,
    store: Path,
    size: int,
    clip_percentiles: tuple[float, float] = (0.5, 99.5),
) -> dict[int, Door]:
    """The model input of each axial slice (readers' index) through the library, the server (its preparation
    with the model's ``clip_percentiles``, and an upload through the page's API), MONAI Label and
    ``VolumeSession``."""
    orientation, axis = s_axis(path)
    assert axis == 2, "MONAI Label's 2D model slices across the file's last axis"
    voxels = {k: file_voxel(orientation, axis, k) for k in slices}
    found: dict[int, Door] = {k: Door({}) for k in slices}

    predictor = clickadapt.load_predictor(str(checkpoint), adapt="frozen", safety=False)
    for k in slices:
        predictor.set_image(path, k)
        assert predictor.session.image is not None
        found[k].inputs["library"] = predictor.session.image.cpu().numpy()

    decoded = decode_file(path.read_bytes(), path.name)
    for k in slices:
        found[k].inputs["server"] = prepare_source(decoded, BRAIN, size, k, clip_percentiles).pixels

    session = VolumeSession(clickadapt.load_predictor(str(checkpoint), adapt="frozen", safety=False))
    session.set_volume(read_volume(path))
    for k in slices:
        session.add_click(voxels[k], 1, axis=axis)
        image = session.predictor.session.image
        assert image is not None
        found[k].inputs["volume session"] = image.cpu().numpy()

    app = create_app(ServerSettings(store=store, model=str(checkpoint)), samples=[])
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        response = client.put("/datastore/", params={"image": "case"}, files={"file": (path.name, path.read_bytes())})
        assert response.status_code == 200, response.text
        for k in slices:
            voxel = voxels[k]
            params = json.dumps({"foreground": [list(voxel)], "background": [], "slice": voxel[axis]})
            response = client.post("/infer/clickadapt_2d", params={"image": "case"}, data={"params": params})
            assert response.status_code == 200, response.text
            data = app.state.service.store.get_image_data(f"ml-case-a{axis}-s{voxel[axis]}")
            assert data is not None
            found[k].inputs["monai label"] = data.pixels
        for k in slices:
            response = client.post(f"/api/uploads?filename={path.name}&slice={k}", content=path.read_bytes())
            assert response.status_code == 201, response.text
            data = app.state.service.store.get_image_data(response.json()["image"]["id"])
            assert data is not None
            found[k].inputs["web page upload"] = data.pixels
    return found


def assert_same_input(reference: np.ndarray, door: Door, atol: float, what: str) -> None:
    for name, pixels in door.inputs.items():
        assert pixels.shape == reference.shape, f"{what}: {name}"
        np.testing.assert_allclose(pixels, reference, rtol=0, atol=atol, err_msg=f"{what}: {name}")


# ------------------------------------------------------------------ synthetic (always runs)


@pytest.mark.parametrize(
    "background",
    [
        "zeros",  # a skull-stripped scan
        "zeros-and-negatives",  # MSLUB: resampling left a few slightly negative voxels; 0 is not the minimum
        "negative",  # a z-scored volume, BRATS: the background is a constant negative value
    ],
)
def test_a_volume_slice_is_the_readers_slice_through_every_door(
    checkpoints: dict[int, Path], tmp_path: Path, background: str
) -> None:
    pictures = [synthetic_brain_slice(70, seed) for seed in range(5)]
    las = np.stack([image * (1.0 + 0.3 * k) for k, (image, _) in enumerate(pictures)], axis=-1).astype(np.float32)
    brain = las > 0
    lesion = np.stack([label for _, label in pictures], axis=-1).astype(bool)
    if background == "negative":
        las[~brain] = -1.7
    elif background == "zeros-and-negatives":
        rim = np.argwhere(brain)[::97]
        las[tuple(rim.T)] = -3.0  # a few in-brain voxels below the zero background
        brain = las != 0
    # Stored as (L, P, S), like the BRATS files: the second axis is flipped on disk.
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(las[:, ::-1, :]), np.diag([-1.0, -1.0, 1.0, 1.0])), path)
    np.testing.assert_array_equal(read_nifti(path), las)
    config = DatasetConfig(reader="brats", slice_policy="all", min_lesion_pixels=1, size=SIZE)
    samples = volume_samples(read_nifti(path), lesion, brain, config, "synthetic", "T1c", "p0", path)
    assert len(samples) == 5
    found = doors(path, [s.slice_index or 0 for s in samples], checkpoints[SIZE], tmp_path / "store", SIZE)
    for sample in samples:
        assert_same_input(sample.image, found[sample.slice_index or 0], ATOL, f"slice {sample.slice_index}")
    expected = {"zeros": 0.0, "zeros-and-negatives": 0.0, "negative": -1.7}[background]
    assert volume_background(las) == pytest.approx(expected)


def test_every_door_clips_a_volume_with_the_models_own_percentiles(other_clip_checkpoint: Path, tmp_path: Path) -> None:
    pictures = [synthetic_brain_slice(70, seed) for seed in range(3)]
    las = np.stack([image * (1.0 + 0.3 * k) for k, (image, _) in enumerate(pictures)], axis=-1).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(las[:, ::-1, :]), np.diag([-1.0, -1.0, 1.0, 1.0])), path)
    found = doors(path, [0, 2], other_clip_checkpoint, tmp_path / "store", SIZE, OTHER_CLIP)
    volume = read_nifti(path)
    for k in (0, 2):
        picture = axial_slice(volume, k)
        ours = prepare_volume_slice(picture, VolumeIntensities.of_volume(volume, OTHER_CLIP), SIZE).pixels
        default = prepare_volume_slice(picture, VolumeIntensities.of_volume(volume), SIZE).pixels
        assert np.abs(ours - default).max() > 0.1  # the two clipping ranges give visibly different inputs…
        assert_same_input(ours, found[k], ATOL, f"slice {k}")  # …and every door uses the model's


def test_volume_background_is_zero_or_the_minimum_when_it_covers_enough() -> None:
    values = np.full(1000, 5.0)
    values[:100] = 0.0
    values[100:103] = -1.0
    assert volume_background(values) == 0.0  # zeros outnumber the minimum
    values[103:300] = -1.0
    assert volume_background(values) == -1.0  # the minimum outnumbers the zeros
    assert volume_background(np.arange(1.0, 1001.0)) is None  # no background: every voxel is brain
    assert volume_background(np.zeros(50)) is None  # a constant volume: all of it counts
    intensities = VolumeIntensities.of_values(np.array([0.0] * 50 + [1.0, 2.0, 3.0] * 20))
    assert intensities.background == 0.0
    np.testing.assert_array_equal(intensities.brain(np.array([[0.0, 2.0]])), [[False, True]])


# ------------------------------------------------------------------ real volumes (../shared/data)


def real_case(data_root: Path, reader: BratsReader | MslubReader, modality: str) -> tuple[LoadUnit, list[Sample]]:
    split = "test" if isinstance(reader, BratsReader) else None
    config = DatasetConfig(
        reader=reader.name, split=split, modality=modality, slice_policy="all", min_lesion_pixels=1, size=REAL_SIZE
    )
    assert reader.subfolder is not None
    root = data_root / reader.subfolder
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    unit = reader.list_units(config, root)[0]
    return unit, reader.load_unit(unit, config)


def spread(samples: list[Sample]) -> list[Sample]:
    """The first, the largest-lesion and the last of the reader's slices."""
    largest = max(samples, key=lambda s: int(s.label.sum()))
    return sorted({id(s): s for s in (samples[0], largest, samples[-1])}.values(), key=lambda s: s.slice_index or 0)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize(
    ("reader", "modality"), [(BratsReader(), "T1c"), (BratsReader(), "FLAIR"), (MslubReader(), "FLAIR")]
)
def test_real_volume_slices_are_the_same_model_input_through_every_door(
    data_root: Path,
    checkpoints: dict[int, Path],
    tmp_path: Path,
    reader: BratsReader | MslubReader,
    modality: str,
) -> None:
    unit, samples = real_case(data_root, reader, modality)
    chosen = spread(samples)
    path = unit.files["image"]
    found = doors(path, [s.slice_index or 0 for s in chosen], checkpoints[REAL_SIZE], tmp_path / "store", REAL_SIZE)
    for sample in chosen:
        door = found[sample.slice_index or 0]
        what = f"{path.name} slice {sample.slice_index}"
        # Every door that sees only the file prepares exactly the same input…
        assert_same_input(door.inputs["library"], door, ATOL, what)
        # …which is the reader's: exactly for MSLUB (no brain mask: the non-zero voxels), within the bound of
        # BRATS's brain mask for BRATS.
        bound = BRATS_MASK_BOUND if "brainmask" in unit.files else ATOL
        assert_same_input(sample.image, door, bound, what)
    if "brainmask" in unit.files:
        # Given the dataset's brain mask, a volume session's slices are the reader's exactly.
        volume = read_volume(path)
        brain_mask = read_volume(unit.files["brainmask"]).data > MASK_THRESHOLD
        session = VolumeSession(clickadapt.load_predictor(str(checkpoints[REAL_SIZE]), adapt="frozen", safety=False))
        session.set_volume(volume, brain_mask)
        orientation, axis = s_axis(path)
        for sample in chosen:
            prepared = session.prepared_slice(axis, file_index(orientation, axis, sample.slice_index or 0))
            np.testing.assert_allclose(prepared.pixels, sample.image, rtol=0, atol=ATOL)
