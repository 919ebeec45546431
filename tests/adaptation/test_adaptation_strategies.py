"""Strategies: where each changes weights, what its steps do, configuration, reproducibility."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from adaptation_testing import (
    BRAIN_CLICKS,
    FUNDUS_CLICKS,
    equal_states,
    one_torch_thread,
    synthetic_image,
    tiny_network,
    tiny_state,
    weights,
)

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import STRATEGY_NAMES, make_strategy, strategy_config
from clickadapt.adaptation.strategies.base import image_loss
from clickadapt.adaptation.strategies.post_interaction import PostInteractionConfig, synthetic_correction_clicks
from clickadapt.adaptation.strategies.tent import normalisation_affine_parameters
from clickadapt.adaptation.strategies.tsca import TscaStrategy
from clickadapt.clicks.encoding import model_input
from clickadapt.tasks import BRAIN, FUNDUS

# Whether weights change after clicks 1, 2, 3 and at finish.
HOOK_POINTS = {
    "frozen": [False, False, False, False],
    "mid": [False, True, True, False],
    "post": [False, False, False, True],
    "oaims": [False, True, True, True],
    "tent": [True, True, True, False],
    "self-train": [False, False, False, True],
    "ia-sa": [True, True, True, False],
    "tsca": [True, True, True, False],
}


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    yield from one_torch_thread()


def test_every_strategy_has_its_hook_points_listed() -> None:
    assert set(HOOK_POINTS) == set(STRATEGY_NAMES)


@pytest.mark.parametrize("name", list(HOOK_POINTS))
def test_strategy_changes_weights_only_at_its_hook_points(name: str) -> None:
    state = tiny_state(BRAIN, name, lr=1e-3)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN))
    changed = []
    for click in BRAIN_CLICKS[:3]:
        before = weights(state.model)
        session.add_click(click)
        changed.append(not equal_states(weights(state.model), before))
    before = weights(state.model)
    session.finish()
    changed.append(not equal_states(weights(state.model), before))
    assert changed == HOOK_POINTS[name]
    assert state.version == sum(changed)


def oaims_stage1_loss(state: ModelState, image: np.ndarray, target: np.ndarray) -> float:
    loss = PostInteractionConfig().build()
    inputs = model_input(torch.from_numpy(image), [BRAIN_CLICKS[0]], BRAIN.num_classes).unsqueeze(0)
    with torch.no_grad():
        total, _ = image_loss(loss, state.model(inputs), torch.from_numpy(target)[None], [BRAIN_CLICKS[0]])
    return float(total)


def test_post_interaction_step_lowers_its_own_loss_on_its_pseudo_label() -> None:
    # With one click, P_final is the stage-1 prediction itself: Stage 2 has no error to correct and is
    # skipped, so the update is exactly one Stage-1 step on L_DF(f(I, {c1}), P_final) + β·L_CCG(c1).
    state = tiny_state(BRAIN, "post", lr=1e-3)
    session = InteractiveSession(state)
    image = synthetic_image(BRAIN)
    session.set_image(image)
    session.add_click(BRAIN_CLICKS[0])
    pseudo_label = session.predictions[-1].copy()
    before = oaims_stage1_loss(state, image, pseudo_label)
    session.finish()
    after = oaims_stage1_loss(state, image, pseudo_label)
    report = session.finish_report
    assert report is not None and report.steps == 1 and "stage 2 skipped" in report.note
    assert report.losses["stage1_total"] == pytest.approx(before, rel=1e-5)
    assert after < before


def test_synthetic_correction_clicks_hit_the_largest_error_components_with_the_pseudo_label_class() -> None:
    final = np.zeros((16, 16), np.int64)
    final[2:8, 2:8] = 1  # 36 px of class 1 that the stage-1 prediction misses
    final[10:12, 10:12] = 1  # 4 px missed
    prediction = np.zeros((16, 16), np.int64)
    prediction[13:16, 0:3] = 1  # 9 px false positive
    clicks = synthetic_correction_clicks(final, prediction, max_clicks=2, rng=np.random.default_rng(0))
    assert len(clicks) == 2
    assert 2 <= clicks[0].row < 8 and 2 <= clicks[0].col < 8 and clicks[0].label == 1
    assert clicks[1].row >= 13 and clicks[1].col < 3 and clicks[1].label == 0
    again = synthetic_correction_clicks(final, prediction, max_clicks=2, rng=np.random.default_rng(0))
    assert again == clicks
    assert synthetic_correction_clicks(final, final, 10, np.random.default_rng(0)) == []


def test_mid_interaction_without_click_loss_drops_the_ccg_term() -> None:
    for click_loss in (True, False):
        session = InteractiveSession(tiny_state(BRAIN, "mid", click_loss=click_loss))
        session.set_image(synthetic_image(BRAIN))
        session.add_click(BRAIN_CLICKS[0])
        session.add_click(BRAIN_CLICKS[1])
        report = session.reports[-1]
        assert report is not None and set(report.losses) == {"dice_focal", "click_gaussian", "total"}
        assert (report.losses["click_gaussian"] > 0) == click_loss
        expected_total = report.losses["dice_focal"] + 200.0 * report.losses["click_gaussian"]
        assert report.losses["total"] == pytest.approx(expected_total, rel=1e-5)


def run_stream(name: str, **overrides: object) -> dict[str, torch.Tensor]:
    state = tiny_state(FUNDUS, name, lr=1e-3, **overrides)
    session = InteractiveSession(state)
    for seed in range(2):
        session.set_image(synthetic_image(FUNDUS, seed=seed))
        for click in FUNDUS_CLICKS[:3]:
            session.add_click(click)
        session.finish()
    return weights(state.model)


@pytest.mark.parametrize(("name", "overrides"), [("oaims", {"seed": 3}), ("tsca", {"steps_per_click": 2})])
def test_runs_are_reproducible_under_a_seed(name: str, overrides: dict[str, object]) -> None:
    first, second = run_stream(name, **overrides), run_stream(name, **overrides)
    assert equal_states(first, second)
    assert not equal_states(first, weights(tiny_network(FUNDUS)))


def test_tent_adapts_only_normalisation_affine_parameters() -> None:
    state = tiny_state(BRAIN, "tent", lr=1e-2)
    affine = {id(parameter) for parameter in normalisation_affine_parameters(state.model)}
    before = {name: parameter.detach().clone() for name, parameter in state.model.named_parameters()}
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    report = session.reports[-1]
    assert report is not None and report.updated and "entropy" in report.losses
    for name, parameter in state.model.named_parameters():
        unchanged = torch.equal(parameter, before[name])
        assert unchanged != (id(parameter) in affine), name


def test_tent_needs_affine_normalisation() -> None:
    with pytest.raises(ValueError, match="affine_norm=True"):
        ModelState(tiny_network(BRAIN, affine_norm=False), BRAIN, make_strategy("tent", BRAIN))


def test_tent_per_image_mode_updates_only_at_finish() -> None:
    state = tiny_state(BRAIN, "tent", mode="image", lr=1e-3)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    assert state.version == 0
    session.finish()
    assert state.version == 1


def test_ia_only_mode_restores_the_image_start_weights_at_finish() -> None:
    state = tiny_state(BRAIN, "ia-sa", carry_across_images=False, lr=1e-3)
    start = weights(state.model)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    session.add_click(BRAIN_CLICKS[1])
    assert not equal_states(weights(state.model), start)
    session.finish()
    assert equal_states(weights(state.model), start)
    # An abandoned image is undone too when the next image opens.
    session.set_image(synthetic_image(BRAIN, seed=1))
    session.add_click(BRAIN_CLICKS[0])
    session.set_image(synthetic_image(BRAIN, seed=2))
    assert equal_states(weights(state.model), start)


def test_ia_sa_fits_the_clicked_pixels() -> None:
    state = tiny_state(BRAIN, "ia-sa", lr=1e-2, steps_per_click=5)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    first = session.reports[0]
    assert first is not None and first.steps == 5 and set(first.losses) == {"click", "prior", "total"}
    session.add_click(BRAIN_CLICKS[0])  # same click again: its loss is now measured after the first 5 steps
    second = session.reports[1]
    assert second is not None and second.losses["click"] < first.losses["click"]


def test_tsca_teacher_follows_the_student_by_exponential_moving_average() -> None:
    state = tiny_state(BRAIN, "tsca", lr=1e-3, steps_per_click=1, teacher_momentum=0.9)
    strategy = state.strategy
    assert isinstance(strategy, TscaStrategy)
    teacher_before = weights(state.model)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    student = strategy.student.state_dict()
    for name, teacher in state.model.state_dict().items():
        expected = 0.9 * teacher_before[name] + 0.1 * student[name]
        torch.testing.assert_close(teacher, expected, rtol=1e-5, atol=1e-7)
    # The next image starts its student from the teacher.
    session.set_image(synthetic_image(BRAIN, seed=1))
    assert equal_states(strategy.student.state_dict(), weights(state.model))


def test_default_learning_rate_depends_on_the_task() -> None:
    assert make_strategy("mid", FUNDUS).learning_rate == 1e-4
    assert make_strategy("mid", BRAIN).learning_rate == 5e-5
    assert make_strategy("mid", BRAIN, lr=1e-3).learning_rate == 1e-3
    state = tiny_state(BRAIN, "post")
    assert state.strategy.optimizer is not None
    assert state.strategy.optimizer.param_groups[0]["lr"] == 5e-5


def test_make_strategy_rejects_unknown_names_and_settings() -> None:
    with pytest.raises(ValueError, match="unknown adaptation strategy 'mi'"):
        make_strategy("mi", BRAIN)
    with pytest.raises(ValueError, match="click_los"):
        make_strategy("mid", BRAIN, click_los=False)
    with pytest.raises(ValueError, match="steps_per_click"):
        make_strategy("ia-sa", BRAIN, steps_per_click=0)
    config = strategy_config("oaims", beta=0.0, max_synthetic_clicks=3)
    assert config.model_dump()["beta"] == 0.0 and config.model_dump()["max_synthetic_clicks"] == 3
