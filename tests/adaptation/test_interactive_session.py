"""InteractiveSession: predictions and records, undo, reset, finish, input validation, hot path."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from adaptation_testing import (
    BRAIN_CLICKS,
    SIZE,
    equal_states,
    one_torch_thread,
    synthetic_image,
    tiny_network,
    tiny_state,
    weights,
)

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import FrozenStrategy
from clickadapt.clicks.click import Click
from clickadapt.tasks import BRAIN, FUNDUS


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    yield from one_torch_thread()


def count_forwards(model: torch.nn.Module) -> list[bool]:
    """Record, per network forward, whether it ran with autograd (``True``) or without."""
    calls: list[bool] = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(output.requires_grad))
    return calls


def test_frozen_session_records_predictions_and_keeps_every_weight() -> None:
    network = tiny_network(BRAIN)
    before = weights(network)
    session = InteractiveSession(network, BRAIN)
    session.set_image(synthetic_image(BRAIN), "img-0")
    for click in BRAIN_CLICKS[:3]:
        prediction = session.add_click(click)
        assert prediction.shape == (SIZE, SIZE) and prediction.dtype == np.int64
    final = session.finish()

    assert equal_states(weights(network), before)
    assert all(parameter.grad is None for parameter in network.parameters())
    assert session.strategy.optimizer is None
    assert session.clicks == tuple(BRAIN_CLICKS[:3])
    assert len(session.predictions) == 3 and session.versions == [0, 0, 0] and session.model_version == 0
    np.testing.assert_array_equal(final, session.predictions[-1])
    np.testing.assert_array_equal(session.final_mask, final)
    np.testing.assert_array_equal(session.first_click_prediction, session.predictions[0])
    probabilities = session.probabilities
    assert probabilities is not None and probabilities.shape == (2, SIZE, SIZE) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=0), final)
    assert len(session.timings) == 3 and all(t.forward_s > 0 and t.update_s == 0 for t in session.timings)
    assert session.finish_timing is not None and session.finish_timing.update_s == 0


def test_prediction_equals_a_plain_forward_of_the_network() -> None:
    network = tiny_network(BRAIN)
    session = InteractiveSession(network, BRAIN, click_sigma=5.0)
    image = synthetic_image(BRAIN)
    session.set_image(image)
    prediction = session.add_click(BRAIN_CLICKS[0])
    from clickadapt.clicks.encoding import model_input

    with torch.no_grad():
        logits = network(model_input(torch.from_numpy(image), [BRAIN_CLICKS[0]], 2, 5.0).unsqueeze(0))
    np.testing.assert_array_equal(prediction, logits.argmax(1)[0].numpy())


def test_frozen_click_costs_exactly_one_inference_forward() -> None:
    network = tiny_network(BRAIN)
    calls = count_forwards(network)
    session = InteractiveSession(network, BRAIN)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    session.add_click(BRAIN_CLICKS[1])
    session.finish()
    assert calls == [False, False]


def test_mid_interaction_forwards_only_what_it_needs() -> None:
    state = tiny_state(BRAIN, "mid")
    calls = count_forwards(state.model)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    # Click 1: no update; the displayed forward keeps its graph for the MI step of click 2.
    assert calls == [True]
    session.add_click(BRAIN_CLICKS[1])
    # P_init = f(I, C_2) without grad; the step back-propagates through the kept f(I, C_1); then the
    # displayed forward (with graph again, for click 3): 2 forwards + 1 backward per MI click.
    assert calls == [True, False, True]
    session.finish()  # MI does nothing at the end; nothing is recomputed
    assert calls == [True, False, True]


def test_mid_interaction_naive_path_recomputes_the_previous_forward() -> None:
    state = tiny_state(BRAIN, "mid")
    calls = count_forwards(state.model)
    session = InteractiveSession(state, reuse_displayed_forward=False)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    assert calls == [False]  # click 1: no update, the displayed forward only
    session.add_click(BRAIN_CLICKS[1])
    # P_init = f(I, C_2) without grad, f(I, C_1) with grad for the step, then the displayed forward.
    assert calls == [False, False, True, False]


def test_undo_after_mid_update_restores_weights_and_optimizer_bit_for_bit() -> None:
    state = tiny_state(BRAIN, "mid", lr=1e-3)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN))
    initial_weights = weights(state.model)
    session.add_click(BRAIN_CLICKS[0])
    session.add_click(BRAIN_CLICKS[1])  # first MI update
    after_two = weights(state.model)
    optimizer_after_two = copy.deepcopy(state.strategy.state_dict())
    prediction_after_two = session.predictions[-1].copy()
    session.add_click(BRAIN_CLICKS[2])  # second MI update
    assert not equal_states(weights(state.model), after_two)

    restored_prediction = session.undo()

    assert session.last_undo is not None and session.last_undo.restored_weights
    assert equal_states(weights(state.model), after_two)
    assert equal_states(state.strategy.state_dict(), optimizer_after_two)
    assert session.clicks == tuple(BRAIN_CLICKS[:2])
    np.testing.assert_array_equal(restored_prediction, prediction_after_two)
    # A second undo goes back past the first update: original weights, empty optimizer state.
    session.undo()
    assert session.last_undo.restored_weights
    assert equal_states(weights(state.model), initial_weights)
    assert state.strategy.state_dict()["optimizer"]["state"] == {}
    # Undoing the first click (no update) removes it and leaves nothing.
    assert session.undo() is None
    assert session.clicks == () and not session.last_undo.restored_weights
    with pytest.raises(ValueError, match="nothing to undo"):
        session.undo()


def test_redoing_an_undone_click_reproduces_the_same_weights() -> None:
    state = tiny_state(BRAIN, "mid", lr=1e-3)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    session.add_click(BRAIN_CLICKS[1])
    first = weights(state.model)
    session.undo()
    session.add_click(BRAIN_CLICKS[1])
    assert equal_states(weights(state.model), first)


def test_undo_after_another_session_updated_the_model_keeps_the_weights() -> None:
    state = tiny_state(BRAIN, "mid", lr=1e-3)
    first, second = InteractiveSession(state), InteractiveSession(state)
    first.set_image(synthetic_image(BRAIN, seed=1))
    second.set_image(synthetic_image(BRAIN, seed=2))
    for session in (first, second):
        session.add_click(BRAIN_CLICKS[0])
        session.add_click(BRAIN_CLICKS[1])
    assert state.version == 2
    current = weights(state.model)

    prediction = first.undo()

    assert first.last_undo is not None and not first.last_undo.restored_weights
    assert "weights kept" in first.last_undo.reason
    assert equal_states(weights(state.model), current) and state.version == 2
    assert first.clicks == (BRAIN_CLICKS[0],)
    # The remaining prediction is recomputed with the current weights and says so.
    assert first.versions == [2]
    np.testing.assert_array_equal(prediction, first.predictions[0])


def test_undo_depth_limits_bit_exact_restoration() -> None:
    state = tiny_state(BRAIN, "mid")
    session = InteractiveSession(state, undo_depth=1)
    session.set_image(synthetic_image(BRAIN))
    for click in BRAIN_CLICKS[:3]:
        session.add_click(click)
    session.undo()
    assert session.last_undo is not None and session.last_undo.restored_weights
    session.undo()
    assert not session.last_undo.restored_weights and "undo depth" in session.last_undo.reason


def test_undo_depth_zero_takes_no_snapshot() -> None:
    state = tiny_state(BRAIN, "mid", lr=1e-3)
    session = InteractiveSession(state, undo_depth=0)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    session.add_click(BRAIN_CLICKS[1])
    assert session.timings[1].snapshot_s == 0.0 and session.timings[1].update_s > 0
    adapted = weights(state.model)
    session.undo()
    assert session.last_undo is not None and not session.last_undo.restored_weights
    assert equal_states(weights(state.model), adapted)


def test_reset_drops_clicks_and_keeps_weights() -> None:
    state = tiny_state(BRAIN, "mid", lr=1e-3)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    session.add_click(BRAIN_CLICKS[1])
    adapted = weights(state.model)
    session.reset()
    assert session.clicks == () and session.predictions == [] and session.probabilities is None
    assert equal_states(weights(state.model), adapted) and state.version == 1
    session.add_click(BRAIN_CLICKS[2])
    assert session.first_click_prediction is not None and state.version == 1


def test_adapt_false_runs_no_strategy_hook() -> None:
    state = tiny_state(BRAIN, "oaims", lr=1e-3)
    before = weights(state.model)
    session = InteractiveSession(state, adapt=False)
    session.set_image(synthetic_image(BRAIN))
    for click in BRAIN_CLICKS[:3]:
        session.add_click(click)
    session.finish()
    assert equal_states(weights(state.model), before) and state.version == 0


def test_session_accepts_a_strategy_name_with_a_bare_network() -> None:
    session = InteractiveSession(tiny_network(FUNDUS), FUNDUS, "post")
    assert session.strategy.name == "post" and session.task == FUNDUS


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((3, SIZE, SIZE), np.float32), "3 channels"),
        (np.zeros((SIZE, SIZE), np.float32), "shape"),
        (np.zeros((1, 4, SIZE), np.float32), "at least 8"),
        (np.full((1, SIZE, SIZE), np.nan, np.float32), "NaN"),
        (np.zeros((1, SIZE, SIZE), np.complex64), "real numbers"),
        ([[[0.0]]], "numpy array"),
    ],
)
def test_bad_images_raise_and_leave_the_session_unchanged(image: object, message: str) -> None:
    session = InteractiveSession(tiny_network(BRAIN), BRAIN)
    session.set_image(synthetic_image(BRAIN), "good")
    session.add_click(BRAIN_CLICKS[0])
    with pytest.raises(ValueError, match=message):
        session.set_image(image, "bad")  # type: ignore[arg-type]
    assert session.image_id == "good" and session.clicks == (BRAIN_CLICKS[0],)


@pytest.mark.parametrize(
    ("click", "message"),
    [
        (Click(SIZE, 0, 1), "row 32 is outside"),
        (Click(0, -1, 1), "col -1 is outside"),
        (Click(0, 0, 2), "label 2 is not a class"),
        ((0, 0, 1), "must be a Click"),
    ],
)
def test_bad_clicks_raise_and_leave_state_unchanged(click: object, message: str) -> None:
    state = tiny_state(BRAIN, "tent", lr=1e-3)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    before, version = weights(state.model), state.version
    with pytest.raises(ValueError, match=message):
        session.add_click(click)  # type: ignore[arg-type]
    assert equal_states(weights(state.model), before) and state.version == version
    assert session.clicks == (BRAIN_CLICKS[0],) and len(session.predictions) == 1


def test_finish_errors_leave_state_unchanged() -> None:
    state = tiny_state(BRAIN, "post", lr=1e-3)
    session = InteractiveSession(state)
    with pytest.raises(ValueError, match="no image is open"):
        session.add_click(BRAIN_CLICKS[0])
    session.set_image(synthetic_image(BRAIN), "img-7")
    with pytest.raises(ValueError, match="no click"):
        session.finish()
    assert state.version == 0
    session.add_click(BRAIN_CLICKS[0])
    session.finish()
    after_finish, version = weights(state.model), state.version
    with pytest.raises(ValueError, match="already finished"):
        session.finish()
    for action in (lambda: session.add_click(BRAIN_CLICKS[1]), session.undo, session.reset):
        with pytest.raises(ValueError, match="already finished"):
            action()
    assert equal_states(weights(state.model), after_finish) and state.version == version
    assert session.clicks == (BRAIN_CLICKS[0],)


def test_finish_with_an_edited_mask_hands_that_mask_to_the_strategy() -> None:
    state = tiny_state(BRAIN, "post", lr=1e-3)
    seen: list[np.ndarray] = []
    original = state.strategy.after_image
    state.strategy.after_image = lambda event: seen.append(event.final_mask.cpu().numpy()) or original(event)  # type: ignore[method-assign]
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN), "img-8")
    session.add_click(BRAIN_CLICKS[0])
    edited = np.zeros((SIZE, SIZE), dtype=np.uint8)
    edited[10:20, 12:22] = 1
    final = session.finish(final_mask=edited)
    np.testing.assert_array_equal(final, edited)
    np.testing.assert_array_equal(seen[0], edited)
    assert final.dtype == np.int64 and session.final_mask is not None and not session.final_mask.flags.writeable
    assert state.version == 1  # the image update ran on the edited mask


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((SIZE, SIZE + 1), dtype=np.int64), "final_mask has shape"),
        (np.zeros((SIZE, SIZE), dtype=np.float32), "integer class indices"),
        (np.full((SIZE, SIZE), 2, dtype=np.int64), r"classes 2\.\.2; task 'brain' has classes 0\.\.1"),
        (np.full((SIZE, SIZE), -1, dtype=np.int64), "classes -1"),
    ],
)
def test_finish_refuses_an_unusable_final_mask_and_changes_nothing(mask: np.ndarray, message: str) -> None:
    state = tiny_state(BRAIN, "post", lr=1e-3)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN), "img-9")
    session.add_click(BRAIN_CLICKS[0])
    before = weights(state.model)
    with pytest.raises(ValueError, match=message):
        session.finish(final_mask=mask)
    assert not session.finished and state.version == 0 and equal_states(weights(state.model), before)
    session.finish()  # the image can still be finished
    assert session.finished


def test_constructor_rejects_mismatching_arguments() -> None:
    state = ModelState(tiny_network(BRAIN), BRAIN)
    with pytest.raises(ValueError, match="does not match"):
        InteractiveSession(state, FUNDUS)
    with pytest.raises(ValueError, match="owns the strategy"):
        InteractiveSession(state, strategy=FrozenStrategy(BRAIN))
    with pytest.raises(ValueError, match="task is required"):
        InteractiveSession(tiny_network(BRAIN))


def test_a_failing_listener_rolls_the_click_update_back() -> None:
    state = tiny_state(BRAIN, "mid", lr=1e-3)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN))
    session.add_click(BRAIN_CLICKS[0])
    before = weights(state.model)
    optimizer_before = copy.deepcopy(state.strategy.state_dict())

    def refuse(event: object) -> None:
        raise RuntimeError("safety check failed")

    state.add_listener(refuse)
    with pytest.raises(RuntimeError, match="safety check failed"):
        session.add_click(BRAIN_CLICKS[1])
    state.remove_listener(refuse)
    assert equal_states(weights(state.model), before)
    assert equal_states(state.strategy.state_dict(), optimizer_before)
    assert session.clicks == (BRAIN_CLICKS[0],)
