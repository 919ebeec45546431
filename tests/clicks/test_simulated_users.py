"""Simulated users (method.md §5) on constructed label / prediction maps."""

from __future__ import annotations

import numpy as np
import pytest

from clickadapt.clicks.click import Click
from clickadapt.clicks.simulators import (
    SIMULATED_USER_NAMES,
    CenterUser,
    DeepestUser,
    ErrorComponent,
    OaimsUser,
    SimulatedUser,
    distance_to_boundary,
    error_components,
    make_simulated_user,
)


def _errors_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 20×20 scene with three error components of known size.

    - class 1 predicted as 0: a 5×6 block (area 30) — the largest;
    - class 0 predicted as 2: a 3×4 block (area 12);
    - class 2 predicted as 1: two pixels touching only diagonally (one 8-connected component, area 2).
    """
    label = np.zeros((20, 20), dtype=np.int64)
    prediction = np.zeros((20, 20), dtype=np.int64)
    label[2:7, 3:9] = 1  # missed: predicted 0
    prediction[12:15, 2:6] = 2  # false positive of class 2 on background
    label[16, 16] = label[17, 17] = 2
    prediction[16, 16] = prediction[17, 17] = 1
    return label, prediction


def test_error_components_are_8_connected_and_sorted_by_area() -> None:
    label, prediction = _errors_scene()
    components = error_components(label, prediction)
    assert [(c.true_class, c.predicted_class, c.area) for c in components] == [(1, 0, 30), (0, 2, 12), (2, 1, 2)]
    assert all(isinstance(c, ErrorComponent) for c in components)
    assert components[0].mask[2:7, 3:9].all()
    assert components[0].mask.sum() == 30
    assert components[2].mask[16, 16] and components[2].mask[17, 17]
    mask, true_class = components[1]  # the (mask, true_class) tuple contract
    assert true_class == 0
    assert mask.sum() == 12


def test_error_components_split_one_pair_into_components_and_break_ties_deterministically() -> None:
    label = np.zeros((10, 10), dtype=np.int64)
    prediction = np.zeros((10, 10), dtype=np.int64)
    label[0:2, 0:2] = 1  # class 1 → 0, area 4, first in raster order
    label[6:8, 6:8] = 1  # class 1 → 0, area 4
    prediction[0:2, 6:8] = 1  # class 0 → 1, area 4
    components = error_components(label, prediction)
    assert [(c.true_class, c.area) for c in components] == [(0, 4), (1, 4), (1, 4)]
    assert components[1].mask[0, 0]
    assert components[2].mask[7, 7]
    (largest,) = error_components(label, prediction, max_components=1)
    assert (largest.true_class, largest.predicted_class, largest.area) == (0, 1, 4)
    assert np.array_equal(largest.mask, components[0].mask)


def test_error_components_empty_for_a_perfect_prediction_and_shape_checked() -> None:
    label, _ = _errors_scene()
    assert error_components(label, label.copy()) == []
    with pytest.raises(ValueError, match="shape"):
        error_components(label, label[:-1])
    with pytest.raises(ValueError, match="dtype"):
        error_components(label.astype(float), label)


@pytest.mark.parametrize("seed", range(8))
def test_oaims_next_click_lies_in_the_largest_error_component_with_its_true_class(seed: int) -> None:
    label, prediction = _errors_scene()
    click = OaimsUser(seed).next_click(label, prediction)
    assert click is not None
    assert 2 <= click.row < 7 and 3 <= click.col < 9
    assert click.label == 1 == label[click.row, click.col]


def test_oaims_same_seed_same_clicks_different_seed_different_clicks() -> None:
    label, prediction = _errors_scene()

    def sequence(seed: int) -> list[Click | None]:
        user = OaimsUser(seed)
        return [user.first_click(label)] + [user.next_click(label, prediction) for _ in range(5)]

    assert sequence(3) == sequence(3)
    assert sequence(3) != sequence(4)
    distinct_first = {OaimsUser(seed).next_click(label, prediction) for seed in range(10)}
    assert len(distinct_first) > 1


def test_oaims_first_click_is_in_the_largest_foreground_component() -> None:
    label = np.zeros((16, 16), dtype=np.int64)
    label[1:3, 1:3] = 2  # small blob, area 4
    label[6:14, 5:13] = 1  # large blob, area 64, with a cup inside
    label[8:11, 8:11] = 2
    for seed in range(10):
        click = OaimsUser(seed).first_click(label)
        assert 6 <= click.row < 14 and 5 <= click.col < 13
        assert click.label == label[click.row, click.col]
    cup_click = OaimsUser(0, first_click_class=2).first_click(label)
    assert 8 <= cup_click.row < 11 and 8 <= cup_click.col < 11  # largest cup component, not the 2×2 one
    assert cup_click.label == 2
    disc_click = OaimsUser(0, first_click_class=(1, 2)).first_click(label)
    assert 6 <= disc_click.row < 14


@pytest.mark.parametrize("name", SIMULATED_USER_NAMES)
def test_empty_foreground_is_rejected_for_the_first_click(name: str) -> None:
    with pytest.raises(ValueError, match="label has no foreground"):
        make_simulated_user(name, seed=0).first_click(np.zeros((8, 8), dtype=np.int64))
    label = np.zeros((8, 8), dtype=np.int64)
    label[2, 2] = 1
    with pytest.raises(ValueError, match="label has no foreground"):
        make_simulated_user(name, seed=0, first_click_class=2).first_click(label)


@pytest.mark.parametrize("name", SIMULATED_USER_NAMES)
def test_next_click_is_none_for_a_perfect_prediction(name: str) -> None:
    label, _ = _errors_scene()
    assert make_simulated_user(name, seed=1).next_click(label, label.copy()) is None


def test_center_user_clicks_the_exact_distance_maximum_with_the_image_edge_as_boundary() -> None:
    label = np.zeros((12, 12), dtype=np.int64)
    prediction = np.zeros((12, 12), dtype=np.int64)
    label[0:5, 2:7] = 1  # 5×5 block touching the top edge; without padding the centre would slide to row 0
    for seed in range(3):
        assert CenterUser(seed).next_click(label, prediction) == Click(2, 4, 1)
    corner = np.zeros((10, 10), dtype=np.int64)
    corner[0:3, 0:3] = 1  # in the corner: unpadded, the EDT maximum would be the corner pixel (0, 0)
    assert CenterUser(0).next_click(corner, np.zeros_like(corner)) == Click(1, 1, 1)


def test_center_user_matches_a_brute_force_distance_maximum() -> None:
    rng = np.random.default_rng(7)
    label = np.zeros((15, 15), dtype=np.int64)
    label[2:13, 3:12] = 1
    label[rng.random((15, 15)) < 0.15] = 0  # ragged holes
    prediction = np.zeros_like(label)
    largest = error_components(label, prediction)[0].mask
    outside = [
        (r, c) for r in range(-1, 16) for c in range(-1, 16) if not (0 <= r < 15 and 0 <= c < 15) or not largest[r, c]
    ]
    outside_array = np.array(outside, dtype=float)

    def brute_depth(row: int, col: int) -> float:
        return float(np.sqrt(((outside_array - (row, col)) ** 2).sum(axis=1)).min())

    depths = {(r, c): brute_depth(r, c) for r, c in zip(*np.nonzero(largest), strict=True)}
    best = max(depths.values())
    for seed in range(5):
        click = CenterUser(seed).next_click(label, prediction)
        assert click is not None
        assert depths[(click.row, click.col)] == pytest.approx(best)
        assert click.label == 1
    assert distance_to_boundary(largest).max() == pytest.approx(best)


def test_center_user_first_click_is_the_centre_of_the_largest_foreground_component() -> None:
    label = np.zeros((20, 20), dtype=np.int64)
    label[1:3, 1:3] = 1
    label[8:15, 6:13] = 2  # 7×7 block: unique centre (11, 9)
    assert CenterUser(5).first_click(label) == Click(11, 9, 2)


def _fn_fp_scene(fn_size: int, fp_size: int) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((24, 24), dtype=np.int64)
    prediction = np.zeros((24, 24), dtype=np.int64)
    label[2 : 2 + fn_size, 2 : 2 + fn_size] = 1  # false negatives
    prediction[12 : 12 + fp_size, 12 : 12 + fp_size] = 1  # false positives
    return label, prediction


def test_deepest_user_clicks_positive_when_the_false_negatives_are_deeper() -> None:
    label, prediction = _fn_fp_scene(fn_size=7, fp_size=5)
    assert DeepestUser(0).next_click(label, prediction) == Click(5, 5, 1)


def test_deepest_user_clicks_negative_when_the_false_positives_are_deeper() -> None:
    label, prediction = _fn_fp_scene(fn_size=5, fp_size=9)
    assert DeepestUser(0).next_click(label, prediction) == Click(16, 16, 0)


def test_deepest_user_gives_equal_depths_to_the_negative_click_as_ritm_does() -> None:
    label, prediction = _fn_fp_scene(fn_size=5, fp_size=5)
    assert DeepestUser(0).next_click(label, prediction) == Click(14, 14, 0)


def test_deepest_user_has_no_component_step_unlike_the_oaims_user() -> None:
    label = np.zeros((20, 20), dtype=np.int64)
    prediction = np.zeros((20, 20), dtype=np.int64)
    label[0, :] = 1  # thin strip of false negatives: area 20, depth 1
    label[10:15, 10:15] = 1  # thick block of false negatives: area 25, depth 3
    prediction[4:6, 0:20] = 1  # thin strip of false positives: area 40 (largest component), depth 1
    assert DeepestUser(0).next_click(label, prediction) == Click(12, 12, 1)
    oaims_click = OaimsUser(0).next_click(label, prediction)
    assert oaims_click is not None and oaims_click.row in (4, 5) and oaims_click.label == 0


def test_deepest_user_multi_class_uses_the_true_class_of_the_deepest_error() -> None:
    label = np.zeros((20, 20), dtype=np.int64)
    prediction = np.zeros((20, 20), dtype=np.int64)
    label[2:17, 2:17] = 1
    label[6:13, 6:13] = 2  # cup 7×7 predicted as rim: depth 4
    prediction[2:17, 2:17] = 1
    assert DeepestUser(0).next_click(label, prediction) == Click(9, 9, 2)


def test_deepest_user_first_click_is_the_deepest_foreground_pixel() -> None:
    label = np.zeros((20, 20), dtype=np.int64)
    label[2:17, 2:17] = 1
    label[6:13, 6:13] = 2
    assert DeepestUser(0).first_click(label) == Click(9, 9, 2)


def test_make_simulated_user_builds_each_protocol_and_rejects_unknown_names() -> None:
    for name, user_class in zip(SIMULATED_USER_NAMES, (OaimsUser, CenterUser, DeepestUser), strict=True):
        user = make_simulated_user(name, seed=0)
        assert isinstance(user, user_class)
        assert isinstance(user, SimulatedUser)
        assert user.name == name
    with pytest.raises(ValueError, match="oaims, center, deepest"):
        make_simulated_user("random", seed=0)


def _square_label(size: int = 64) -> np.ndarray:
    label = np.zeros((size, size), dtype=np.int64)
    label[16:48, 16:48] = 1
    return label


def test_noisy_user_is_seedable_and_leaves_the_base_protocol_unchanged() -> None:
    from clickadapt.clicks.simulators import OaimsUser

    label = _square_label()
    first = make_simulated_user("oaims+jitter3+wrong10", 7)
    again = make_simulated_user("oaims+jitter3+wrong10", 7)
    other = make_simulated_user("oaims+jitter3+wrong10", 8)
    clicks = [first.first_click(label) for _ in range(20)]
    assert clicks == [again.first_click(label) for _ in range(20)]
    assert clicks != [other.first_click(label) for _ in range(20)]
    assert getattr(first, "name", "") == "oaims+jitter3+wrong10"
    # The noise has its own generator: the base user's draws are those of the exact user with the seed.
    exact = OaimsUser(7)
    noisy = make_simulated_user("oaims+jitter3", 7)
    offsets = []
    for _ in range(400):
        base, moved = exact.first_click(label), noisy.first_click(label)
        offsets.append((moved.row - base.row, moved.col - base.col))
    spread = np.asarray(offsets, dtype=float)
    assert np.all(np.abs(spread.mean(axis=0)) < 0.6) and np.all(np.abs(spread.std(axis=0) - 3.0) < 0.5)


def test_noisy_user_gives_the_wrong_class_at_the_stated_rate() -> None:
    label = _square_label()
    user = make_simulated_user("oaims+wrong10", 3)
    clicks = [user.first_click(label) for _ in range(2000)]
    wrong = [click for click in clicks if click.label != label[click.row, click.col]]
    assert 0.08 <= len(wrong) / len(clicks) <= 0.12
    assert all(click.label == 0 for click in wrong)  # the only other class of a binary task


def test_noisy_user_stops_once_satisfied() -> None:
    label = _square_label()
    user = make_simulated_user("oaims+stop90", 0)
    nearly = label.copy()
    nearly[16:18, 16:48] = 0  # 64 of 1024 lesion pixels missed: Dice ≈ 0.97
    assert user.next_click(label, nearly) is None
    poor = np.zeros_like(label)
    poor[16:32, 16:48] = 1  # half the lesion: Dice 0.67
    click = user.next_click(label, poor)
    assert click is not None and label[click.row, click.col] == click.label == 1
    assert make_simulated_user("oaims", 0).next_click(label, nearly) is not None  # the exact user goes on


def test_noisy_user_names_are_checked() -> None:
    for bad in ("oaims+jitter", "oaims+blur3", "oaims+stop90+stop80", "nobody+jitter3"):
        with pytest.raises(ValueError, match="simulated user"):
            make_simulated_user(bad, 0)
    with pytest.raises(ValueError, match="stop_dice"):
        make_simulated_user("oaims+stop150", 0)
