"""Volumes in their file's own voxel order: oblique non-RAS geometry, exact label round trip, propagation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from volume_testing import (
    BLOB_CENTRE,
    BrightNearClicks,
    blob_predictor,
    bright_predictor,
    las_blob,
    las_image,
    oblique_affine,
    to_file_order,
    write_oblique_volume,
)

from clickadapt.adaptation.model_state import ModelState
from clickadapt.data.files import axial_slice, read_nifti
from clickadapt.data.preprocess import apply_brain_intensity_stats, brain_intensity_stats, finish_brain_slice
from clickadapt.predictor import Predictor
from clickadapt.volumes import PropagationConfig, ViewPoint, VolumeOrientation, VolumeSession, read_volume, write_label
from clickadapt.volumes.propagation import foreground_dice, keep_overlapping, seed_clicks

S_AXIS = 0  # the test file is stored (S, P, L): axial slices are across its first axis


def dice(first: np.ndarray, second: np.ndarray) -> float:
    return foreground_dice(first, second)


@pytest.fixture()
def oblique(tmp_path: Path) -> tuple[Path, Path]:
    return write_oblique_volume(tmp_path)


def test_the_file_is_oblique_and_not_ras(oblique: tuple[Path, Path]) -> None:
    volume = read_volume(oblique[0])
    assert volume.shape == (24, 36, 40)
    assert nib.orientations.aff2axcodes(volume.affine) == ("S", "P", "L")
    directions = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    assert not np.allclose(np.abs(directions), np.round(np.abs(directions)), atol=0.05)  # not axis-aligned


def test_axial_slices_are_the_data_readers_slices(oblique: tuple[Path, Path]) -> None:
    volume = read_volume(oblique[0])
    orientation = VolumeOrientation(volume.shape, volume.affine)
    readers_view = read_nifti(oblique[0])  # what training saw: (L, A, S), sliced with axial_slice
    np.testing.assert_array_equal(readers_view, las_image())
    for k in range(volume.shape[S_AXIS]):
        s = k  # the S axis is not flipped in this file
        np.testing.assert_array_equal(orientation.slice_view(volume.data, S_AXIS, k), axial_slice(readers_view, s))


def test_the_network_input_is_the_readers_normalised_slice(oblique: tuple[Path, Path]) -> None:
    volume = read_volume(oblique[0])
    session = VolumeSession(bright_predictor())
    session.set_volume(volume)
    readers_view = read_nifti(oblique[0])
    stats = brain_intensity_stats(readers_view, readers_view != 0)
    for k in (3, 12):
        expected = finish_brain_slice(
            apply_brain_intensity_stats(axial_slice(readers_view, k), axial_slice(readers_view, k) != 0, stats), 48
        )
        np.testing.assert_allclose(session.prepared_slice(S_AXIS, k).pixels, expected, rtol=0, atol=1e-6)


def test_a_click_lands_on_the_clicked_voxel_and_the_label_on_the_right_voxels(oblique: tuple[Path, Path]) -> None:
    volume = read_volume(oblique[0])
    blob = to_file_order(las_blob())
    session = VolumeSession(bright_predictor())
    session.set_volume(volume)
    voxel = (12, 36 - 1 - BLOB_CENTRE[1], BLOB_CENTRE[0])  # (S, P, L) index of the blob's centre
    assert blob[voxel]
    point = session.orientation.voxel_to_view(voxel, S_AXIS)
    # The network's view shows the clicked voxel's value at the clicked pixel.
    assert session.orientation.slice_view(volume.data, S_AXIS, 12)[point.row, point.col] == volume.data[voxel]
    label = session.add_click(voxel, "lesion", axis=S_AXIS)
    assert label.shape == volume.shape and label.dtype == np.uint8 and label[voxel] == 1
    on = np.argwhere(label > 0)
    assert set(on[:, S_AXIS]) == {12}  # only the clicked slice
    np.testing.assert_array_equal(label[12] > 0, blob[12])  # exactly the lesion's voxels on that slice
    assert session.clicks[0].voxel == voxel


def test_upright_view_is_radiological_on_an_oblique_volume(oblique: tuple[Path, Path]) -> None:
    volume = read_volume(oblique[0])
    orientation = VolumeOrientation(volume.shape, volume.affine)

    def world(row: int, col: int) -> np.ndarray:
        voxel = orientation.view_to_voxel(ViewPoint(S_AXIS, 12, row, col))
        return (volume.affine @ np.array([*voxel, 1.0]))[:3]

    up = world(10, 10) - world(11, 10)  # one row up
    right = world(10, 11) - world(10, 10)  # one column right
    assert np.argmax(np.abs(up)) == 1 and up[1] > 0  # anterior at the top
    assert np.argmax(np.abs(right)) == 0 and right[0] < 0  # the patient's left on the picture's right


def test_voxel_and_view_coordinates_are_inverse_on_every_axis() -> None:
    orientation = VolumeOrientation((5, 7, 6), oblique_affine())
    for axis in range(3):
        assert orientation.slice_shape(axis) == orientation.slice_view(np.zeros((5, 7, 6)), axis, 0).shape
        for voxel in np.ndindex(5, 7, 6):
            point = orientation.voxel_to_view(voxel, axis)
            assert point.index == voxel[axis] and orientation.view_to_voxel(point) == voxel
    marker = np.zeros((5, 7, 6), np.float32)
    marker[3, 1, 4] = 1.0
    for axis in range(3):
        point = orientation.voxel_to_view((3, 1, 4), axis)
        assert orientation.slice_view(marker, axis, point.index)[point.row, point.col] == 1.0
        label = np.zeros((5, 7, 6), np.uint8)
        picture = np.zeros(orientation.slice_shape(axis), np.uint8)
        picture[point.row, point.col] = 1
        orientation.write_slice(label, axis, point.index, picture)
        assert np.argwhere(label).tolist() == [[3, 1, 4]]


def test_label_round_trip_is_voxel_exact_in_nifti_and_nrrd(oblique: tuple[Path, Path], tmp_path: Path) -> None:
    volume = read_volume(oblique[0])
    session = VolumeSession(bright_predictor())
    session.set_volume(volume)
    session.add_click((12, 18, 22), 1, axis=S_AXIS)
    session.accept()
    for name in ("label.nii.gz", "label.nrrd"):
        written = session.save_label(tmp_path / name)
        again = read_volume(written)
        np.testing.assert_array_equal(again.data, session.label)
        assert again.data.shape == volume.shape
        np.testing.assert_allclose(again.affine, volume.affine, rtol=0, atol=1e-9)
    nifti = nib.load(tmp_path / "label.nii.gz")
    np.testing.assert_array_equal(nifti.affine, volume.affine)  # bit for bit through the image's header
    assert nifti.get_data_dtype() == np.uint8


def test_nrrd_volumes_keep_their_order_and_geometry(tmp_path: Path) -> None:
    import nrrd

    data = to_file_order(las_image())
    affine = oblique_affine()
    lps = np.array([-1.0, -1.0, 1.0])
    header = {
        "space": "left-posterior-superior",
        "space directions": (affine[:3, :3].T * lps).tolist(),
        "space origin": (affine[:3, 3] * lps).tolist(),
    }
    nrrd.write(str(tmp_path / "image.nrrd"), data, header)
    volume = read_volume(tmp_path / "image.nrrd")
    np.testing.assert_array_equal(volume.data, data)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-12)
    write_label(tmp_path / "label.nii.gz", (data > 200).astype(np.uint8), volume)
    np.testing.assert_allclose(nib.load(tmp_path / "label.nii.gz").affine, affine, atol=1e-5)


def test_bad_volumes_and_labels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_volume(tmp_path / "absent.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    with pytest.raises(ValueError, match="3D"):
        read_volume(tmp_path / "flat.nii.gz")
    volume = read_volume(write_oblique_volume(tmp_path)[0])
    with pytest.raises(ValueError, match="shape"):
        write_label(tmp_path / "label.nii.gz", np.zeros((2, 2, 2), np.uint8), volume)
    session = VolumeSession(bright_predictor())
    with pytest.raises(ValueError, match="no volume"):
        session.add_click((0, 0, 0))
    session.set_volume(volume)
    with pytest.raises(ValueError, match="outside"):
        session.add_click((24, 0, 0), axis=S_AXIS)
    with pytest.raises(ValueError, match="axis"):
        session.add_click((1, 1, 1), axis=3)


# ---------------------------------------------------------------------------------------------- propagation


def test_seed_clicks_sit_at_the_deepest_pixel_of_each_component() -> None:
    mask = np.zeros((30, 30), np.int64)
    mask[2:13, 2:13] = 1  # 11×11: centre (7, 7)
    mask[20:25, 20:25] = 1  # 5×5: centre (22, 22)
    mask[0, 29] = 1  # too small
    seeds = seed_clicks(mask, max_seeds=3, min_area=4)
    assert [(c.row, c.col, c.label) for c in seeds] == [(7, 7, 1), (22, 22, 1)]
    assert len(seed_clicks(mask, max_seeds=1)) == 1
    assert seed_clicks(np.zeros((5, 5), np.int64)) == []
    kept = keep_overlapping(mask, np.pad(np.ones((3, 3)), ((5, 22), (5, 22))))
    assert kept[7, 7] == 1 and kept[22, 22] == 0


def test_propagation_covers_the_blob_slices_and_stops_outside(oblique: tuple[Path, Path]) -> None:
    volume = read_volume(oblique[0])
    blob = to_file_order(las_blob())
    session = VolumeSession(bright_predictor())
    session.set_volume(volume)
    session.add_click((12, 18, 22), "lesion", axis=S_AXIS)
    report = session.accept()
    assert report is not None
    lesion_slices = sorted({int(k) for k in np.argwhere(blob)[:, S_AXIS]})
    assert lesion_slices == list(range(8, 17))
    assert sorted([12, *report.written]) == lesion_slices
    assert report.stops == {1: "vanished", -1: "vanished"}
    np.testing.assert_array_equal(session.label > 0, blob)  # every blob voxel, nothing outside


def test_the_intensity_rule_stops_a_network_that_paints_a_blob_at_every_seed(oblique: tuple[Path, Path]) -> None:
    volume = read_volume(oblique[0])
    lesion_slices = set(range(8, 17))
    session = VolumeSession(blob_predictor(), PropagationConfig(max_intensity_shift=None))  # the rule off
    session.set_volume(volume)
    session.add_click((12, 18, 22), "lesion", axis=S_AXIS)
    runaway = session.accept()
    assert runaway is not None and runaway.stops == {1: "edge", -1: "edge"}  # blobs up to both edges
    assert set(np.argwhere(session.label)[:, S_AXIS]) == set(range(24))
    session.propagation = PropagationConfig(max_intensity_shift=2.0, converged_dice=None)
    report = session.propagate(S_AXIS, 12)
    assert report.stops == {1: "faded", -1: "faded"}
    labelled = set(np.argwhere(session.label)[:, S_AXIS])
    assert 12 in labelled and labelled <= lesion_slices and len(labelled) >= 5  # the blob's bright slices only
    assert set(report.cleared) == set(range(24)) - labelled  # the earlier run-away slices are emptied


def test_slice_by_slice_labels_only_the_clicked_slice(oblique: tuple[Path, Path]) -> None:
    volume = read_volume(oblique[0])
    session = VolumeSession(bright_predictor())
    session.set_volume(volume)
    session.add_click((12, 18, 22), 1, axis=S_AXIS)
    assert session.accept(propagate=False) is None
    assert set(np.argwhere(session.label)[:, S_AXIS]) == {12}


def test_a_propagated_slice_stays_correctable_and_then_stops_propagation(oblique: tuple[Path, Path]) -> None:
    volume = read_volume(oblique[0])
    session = VolumeSession(bright_predictor())
    session.set_volume(volume)
    session.add_click((12, 18, 22), 1, axis=S_AXIS)
    session.accept()
    before = session.label.copy()
    assert session.slices[(S_AXIS, 14)].origin == "propagated"
    label = session.add_click((14, 18, 22), "background", axis=S_AXIS)  # a negative click on a propagated slice
    assert label[14, 18, 22] == 0 and (label[14] > 0).sum() > 0  # a hole, the rest of the seeded mask kept
    np.testing.assert_array_equal(label[np.arange(24) != 14], before[np.arange(24) != 14])
    assert session.slices[(S_AXIS, 14)].origin == "user"
    assert session.propagate(S_AXIS, 12).stops[1] == "converged"  # slice 13 already shows the same mask
    session.propagation = PropagationConfig(converged_dice=None)
    report = session.propagate(S_AXIS, 12)
    assert report.stops[1] == "user slice" and [k for k in report.written if k > 12] == [13]
    assert session.label[14, 18, 22] == 0  # the user's slice is not overwritten


def test_a_shorter_repropagation_clears_what_the_earlier_one_wrote(oblique: tuple[Path, Path]) -> None:
    volume = read_volume(oblique[0])
    session = VolumeSession(bright_predictor(), PropagationConfig(min_area=10))
    session.set_volume(volume)
    session.add_click((12, 18, 22), 1, axis=S_AXIS)
    session.accept()
    assert (session.label[15] > 0).any()
    session.propagation = PropagationConfig(min_area=40, converged_dice=None)  # thin ends now count as vanished
    report = session.propagate(S_AXIS, 12)
    assert report.cleared and all(not (session.label[k] > 0).any() for k in report.cleared)


def test_user_clicks_adapt_accepting_runs_the_after_image_update_and_propagation_does_not(
    oblique: tuple[Path, Path],
) -> None:
    predictor = bright_predictor("oaims")
    session = VolumeSession(predictor)
    session.set_volume(read_volume(oblique[0]))
    session.add_click((12, 18, 22), 1, axis=S_AXIS)
    session.add_click((12, 18, 24), 1, axis=S_AXIS)
    after_clicks = predictor.model_version
    assert after_clicks >= 1  # Mid-Interaction from the second click
    report = session.accept(propagate=False)
    assert report is None and predictor.model_version > after_clicks  # Post-Interaction
    accepted = predictor.model_version
    session.propagate(S_AXIS, 12)
    assert predictor.model_version == accepted
    assert isinstance(predictor.state.model, BrightNearClicks)


@pytest.mark.realdata
def test_a_brats_volume_is_sliced_like_the_brats_reader(data_root: Path) -> None:
    folder = data_root / "brain" / "brats-deepmedic" / "test" / "brats_2013_pat0001_1"
    path = folder / "Flair_subtrMeanDivStd.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    volume = read_volume(path)
    orientation = VolumeOrientation(volume.shape, volume.affine)
    assert orientation.axcodes == ("L", "P", "S")  # stored with a flipped second axis
    readers_view = read_nifti(path)
    for k in (40, 77, 120):
        np.testing.assert_array_equal(orientation.slice_view(volume.data, 2, k), axial_slice(readers_view, k))


def test_restored_clicks_run_no_update_and_their_undo_says_the_weights_keep_them(
    oblique: tuple[Path, Path],
) -> None:
    from clickadapt.predictor import Predictor
    from clickadapt.volumes.session import KEPT_UPDATE_REASON

    predictor = bright_predictor("oaims")
    session = VolumeSession(predictor)
    session.set_volume(read_volume(oblique[0]))
    for voxel in ((12, 18, 22), (14, 18, 22), (14, 18, 24)):
        session.add_click(voxel, 1, axis=S_AXIS)
    version = predictor.model_version
    # A new session on the same weights (as after a restart) gets the clicks back without any update.
    again = VolumeSession(Predictor(predictor.state, predictor.meta))
    again.set_volume(read_volume(oblique[0]))
    again.restore_clicks(session.clicks, [True, True, True])
    assert predictor.model_version == version
    assert again.clicks == session.clicks and again.open_slice == (S_AXIS, 14)
    np.testing.assert_array_equal(again.label, session.label)
    again.undo()  # the open slice's clicks since it was entered stay undoable…
    assert again.last_undo is not None and again.last_undo.restored_weights is False
    assert again.last_undo.reason == KEPT_UPDATE_REASON  # …but their update cannot be taken back
    assert predictor.model_version == version
    with pytest.raises(ValueError, match="without clicks"):
        again.restore_clicks(session.clicks)


def test_removing_any_click_leaves_the_session_as_if_it_was_never_made(oblique: tuple[Path, Path]) -> None:
    from clickadapt.volumes.session import ACCEPTED_REASON

    volume = read_volume(oblique[0])

    def fresh(clicks: list[tuple[tuple[int, int, int], int]]) -> np.ndarray:
        other = VolumeSession(bright_predictor())
        other.set_volume(volume)
        for voxel, label in clicks:
            other.add_click(voxel, label, axis=S_AXIS)
        return np.asarray(other.label).copy()

    a, b, c, d = ((12, 18, 22), 1), ((12, 18, 23), 0), ((12, 16, 21), 1), ((14, 18, 22), 1)
    session = VolumeSession(bright_predictor())
    session.set_volume(volume)
    for voxel, label in (a, b, c):
        session.add_click(voxel, label, axis=S_AXIS)
    assert not np.array_equal(session.label, fresh([a, c]))  # b matters
    reapplied: list[object] = []
    removal = session.remove_clicks([1], reapplied.append)  # b: the middle click of the open slice
    assert [undo.click.voxel for undo in removal.removed] == [b[0]] and removal.dropped == (1, 2)
    assert [click.voxel for click in removal.reapplied] == [c[0]] and reapplied == list(removal.reapplied)
    assert [(click.voxel, click.label) for click in session.clicks] == [a, c]
    np.testing.assert_array_equal(session.label, fresh([a, c]))
    session.add_click(*d, axis=S_AXIS)  # slice 12 is accepted and left
    removal = session.remove_clicks([0])  # a, on a slice no longer open
    assert removal.removed[0].reason == ACCEPTED_REASON and removal.reapplied == ()
    assert [(click.voxel, click.label) for click in session.clicks] == [c, d]
    np.testing.assert_array_equal(session.label, fresh([c, d]))
    session.remove_clicks([0])  # the last click of slice 12: its plane empties
    assert not (session.label[12] > 0).any() and (S_AXIS, 12) not in session.slices
    with pytest.raises(ValueError, match="positions"):
        session.remove_clicks([5])


# ------------------------------------------------------------------------------------ undo on propagated slices


def silence(state: ModelState) -> None:
    """Another session's update of the shared model that leaves it predicting nothing (all logits zero)."""
    state.load_weights({"scale": torch.tensor(0.0)})


def propagated_from_slice_12(path: Path) -> tuple[Predictor, VolumeSession, np.ndarray]:
    """A session whose user segmented axial slice 12 with one click and accepted it (propagated to its
    neighbours); with its predictor and the label volume it then shows."""
    predictor = bright_predictor()
    session = VolumeSession(predictor)
    session.set_volume(read_volume(path))
    session.add_click((12, 18, 22), 1, axis=S_AXIS)
    session.accept()
    return predictor, session, session.label.copy()


def test_undoing_the_clicks_on_a_propagated_slice_brings_back_its_propagated_mask(
    oblique: tuple[Path, Path],
) -> None:
    predictor, session, before = propagated_from_slice_12(oblique[0])
    assert session.slices[(S_AXIS, 14)].origin == "propagated" and (before[14] > 0).sum() > 50
    session.add_click((14, 18, 22), "background", axis=S_AXIS)
    session.add_click((14, 16, 21), 1, axis=S_AXIS)
    silence(predictor.state)  # the undo cannot bring the weights back, and the seeds alone now predict nothing
    session.undo()
    label = session.undo()
    np.testing.assert_array_equal(label, before)  # the propagated mask the slice showed before the clicks
    record = session.slices[(S_AXIS, 14)]
    assert (record.origin, record.source, record.clicks) == ("propagated", 12, [])
    # It is a propagated slice of slice 12 again: a propagation from 12 that ends earlier clears it.
    report = session.propagate(S_AXIS, 12)
    assert report.stops[1] == "vanished" and 14 in report.cleared and not (session.label[14] > 0).any()


def test_removing_the_clicks_on_a_propagated_slice_brings_back_its_propagated_mask(
    oblique: tuple[Path, Path],
) -> None:
    predictor, session, before = propagated_from_slice_12(oblique[0])
    session.add_click((14, 18, 22), "background", axis=S_AXIS)
    session.add_click((10, 18, 22), "background", axis=S_AXIS)  # slice 14 is accepted and left
    silence(predictor.state)
    session.remove_clicks([1])  # the click on slice 14
    np.testing.assert_array_equal(session.label[14], before[14])
    record = session.slices[(S_AXIS, 14)]
    assert (record.origin, record.source, record.clicks) == ("propagated", 12, [])
    session.remove_clicks([1])  # the open slice 10's only click: its propagated mask comes back too
    np.testing.assert_array_equal(session.label, before)


def test_a_slice_whose_clicks_were_all_undone_does_not_stop_propagation(oblique: tuple[Path, Path]) -> None:
    volume = read_volume(oblique[0])
    session = VolumeSession(bright_predictor())
    session.set_volume(volume)
    session.add_click((14, 18, 22), 1, axis=S_AXIS)
    session.undo()  # as if the click on slice 14 had never been made
    session.add_click((12, 18, 22), 1, axis=S_AXIS)
    report = session.accept()
    assert report is not None and report.stops[1] == "vanished" and 14 in report.written
    assert (session.label[14] > 0).any() and session.slices[(S_AXIS, 14)].origin == "propagated"
