"""The simulated volume user: clicks where the largest 3D error is, and the Dice it records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from volume_testing import bright_predictor, las_blob, to_file_order, write_oblique_volume

from clickadapt.volumes import VolumeSession, read_volume
from clickadapt.volumes.simulated import VolumeUser, simulate_volume, volume_dice

S_AXIS = 0


def test_volume_dice_counts_foreground_only() -> None:
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[1:3, 1:3, 1:3] = 1
    assert volume_dice(truth, truth) == 1.0
    assert volume_dice(np.zeros_like(truth), np.zeros_like(truth)) == 1.0
    half = truth.copy()
    half[1] = 0
    assert abs(volume_dice(half, truth) - 2 * 4 / 12) < 1e-12


def test_the_first_click_goes_inside_the_lesion_on_its_largest_slice(tmp_path: Path) -> None:
    session = VolumeSession(bright_predictor())
    session.set_volume(read_volume(write_oblique_volume(tmp_path)[0]))
    truth = to_file_order(las_blob()).astype(np.uint8)
    choice = VolumeUser(seed=0, axis=S_AXIS).next_click(session, truth)
    assert choice is not None and choice.axis == S_AXIS and choice.label == 1
    assert truth[choice.voxel] == 1
    assert choice.voxel[S_AXIS] == 12  # the blob's widest slice


def test_propagation_reaches_the_whole_lesion_in_one_click_slice_by_slice_does_not(tmp_path: Path) -> None:
    volume = read_volume(write_oblique_volume(tmp_path)[0])
    truth = to_file_order(las_blob()).astype(np.uint8)
    curves = {}
    for propagate in (True, False):
        session = VolumeSession(bright_predictor())
        session.set_volume(volume)
        curves[propagate] = simulate_volume(session, truth, VolumeUser(0, S_AXIS), budget=3, propagate=propagate)
    assert curves[True] == [1.0, 1.0, 1.0]
    assert curves[False][0] < 0.3 and curves[False][0] < curves[False][1] < curves[False][2] < 1.0
