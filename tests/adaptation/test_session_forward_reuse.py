"""The hot path: reusing the displayed forward's graph for the next MI step changes no number."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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
from clickadapt.adaptation.strategies import make_strategy
from clickadapt.clicks.click import Click
from clickadapt.tasks import BRAIN, FUNDUS, TaskSpec

TOLERANCE = 1e-5
"""Float rounding only: the reused forward runs with autograd in the contiguous layout, the naive one
without autograd in the channels-last layout (see ``ReferenceUNet.forward``); differences seen: ~2e-6."""


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    yield from one_torch_thread()


@dataclass
class Trace:
    """Everything observable after each step of a run."""

    weights: list[dict[str, torch.Tensor]]
    predictions: list[np.ndarray]
    probabilities: list[np.ndarray]
    losses: list[dict[str, float]]
    optimizer: dict[str, object]


def run_images(task: TaskSpec, strategy: str, clicks: list[Click], reuse: bool, undo_depth: int = 0) -> Trace:
    """Two images with the given clicks each, finished; one session after the other on one model."""
    state = tiny_state(task, strategy, lr=1e-3, seed=1)
    trace = Trace([], [], [], [], {})
    for image_seed in range(2):
        session = InteractiveSession(state, undo_depth=undo_depth, reuse_displayed_forward=reuse)
        session.set_image(synthetic_image(task, seed=image_seed))
        for click in clicks:
            trace.predictions.append(session.add_click(click))
            probabilities = session.probabilities
            assert probabilities is not None
            trace.probabilities.append(probabilities)
            trace.weights.append(weights(state.model))
            report = session.reports[-1]
            trace.losses.append(dict(report.losses) if report is not None else {})
        session.finish()
        trace.weights.append(weights(state.model))
        trace.losses.append(dict(session.finish_report.losses) if session.finish_report is not None else {})
    trace.optimizer = state.strategy.state_dict()
    return trace


def assert_same_trace(fast: Trace, naive: Trace) -> None:
    assert len(fast.weights) == len(naive.weights)
    for fast_weights, naive_weights in zip(fast.weights, naive.weights, strict=True):
        for name, tensor in naive_weights.items():
            torch.testing.assert_close(fast_weights[name], tensor, rtol=0.0, atol=TOLERANCE)
    for fast_prediction, naive_prediction in zip(fast.predictions, naive.predictions, strict=True):
        np.testing.assert_array_equal(fast_prediction, naive_prediction)
    for fast_probabilities, naive_probabilities in zip(fast.probabilities, naive.probabilities, strict=True):
        np.testing.assert_allclose(fast_probabilities, naive_probabilities, rtol=0.0, atol=TOLERANCE)
    for fast_losses, naive_losses in zip(fast.losses, naive.losses, strict=True):
        assert fast_losses.keys() == naive_losses.keys()
        for key, value in naive_losses.items():
            assert fast_losses[key] == pytest.approx(value, rel=TOLERANCE, abs=TOLERANCE)


@pytest.mark.parametrize(
    ("task", "strategy", "clicks"),
    [(BRAIN, "mid", BRAIN_CLICKS[:4]), (BRAIN, "oaims", BRAIN_CLICKS[:4]), (FUNDUS, "oaims", FUNDUS_CLICKS)],
)
def test_reusing_the_displayed_forward_gives_the_naive_weights_and_predictions(
    task: TaskSpec, strategy: str, clicks: list[Click]
) -> None:
    fast = run_images(task, strategy, clicks, reuse=True)
    naive = run_images(task, strategy, clicks, reuse=False)
    assert_same_trace(fast, naive)
    # The runs did learn something (otherwise equality would prove nothing).
    assert not equal_states(fast.weights[0], fast.weights[-1])
    assert any("click_gaussian" in losses for losses in fast.losses)


def test_reuse_is_exact_with_undo_snapshots_too() -> None:
    fast = run_images(BRAIN, "oaims", BRAIN_CLICKS[:3], reuse=True, undo_depth=3)
    naive = run_images(BRAIN, "oaims", BRAIN_CLICKS[:3], reuse=False, undo_depth=3)
    assert_same_trace(fast, naive)


def interleaved_sessions(reuse: bool) -> tuple[list[np.ndarray], dict[str, torch.Tensor]]:
    """Two sessions on one shared model, clicking in turn: each one's kept graph goes stale."""
    state: ModelState = tiny_state(BRAIN, "mid", lr=1e-3)
    first = InteractiveSession(state, undo_depth=0, reuse_displayed_forward=reuse)
    second = InteractiveSession(state, undo_depth=0, reuse_displayed_forward=reuse)
    first.set_image(synthetic_image(BRAIN, seed=0))
    second.set_image(synthetic_image(BRAIN, seed=1))
    predictions = []
    for click in BRAIN_CLICKS[:3]:
        predictions.append(first.add_click(click))
        predictions.append(second.add_click(click))
    predictions.append(first.add_click(BRAIN_CLICKS[3]))
    predictions.append(first.add_click(BRAIN_CLICKS[4]))  # this one can reuse its own fresh graph
    return predictions, weights(state.model)


def test_a_graph_made_stale_by_another_sessions_update_is_not_reused() -> None:
    fast_predictions, fast_weights = interleaved_sessions(reuse=True)
    naive_predictions, naive_weights = interleaved_sessions(reuse=False)
    for fast, naive in zip(fast_predictions, naive_predictions, strict=True):
        np.testing.assert_array_equal(fast, naive)
    for name, tensor in naive_weights.items():
        torch.testing.assert_close(fast_weights[name], tensor, rtol=0.0, atol=TOLERANCE)


def test_undo_then_click_recomputes_instead_of_using_a_dropped_graph() -> None:
    def run(reuse: bool) -> dict[str, torch.Tensor]:
        state = tiny_state(BRAIN, "mid", lr=1e-3)
        session = InteractiveSession(state, undo_depth=3, reuse_displayed_forward=reuse)
        session.set_image(synthetic_image(BRAIN))
        for click in BRAIN_CLICKS[:3]:
            session.add_click(click)
        session.undo()
        session.add_click(BRAIN_CLICKS[3])
        return weights(state.model)

    fast, naive = run(True), run(False)
    for name, tensor in naive.items():
        torch.testing.assert_close(fast[name], tensor, rtol=0.0, atol=TOLERANCE)


def test_kept_graphs_are_dropped_at_every_weight_change_and_bounded() -> None:
    state = tiny_state(BRAIN, "mid", lr=1e-3)
    first, second = InteractiveSession(state, undo_depth=0), InteractiveSession(state, undo_depth=0)
    first.set_image(synthetic_image(BRAIN, seed=0))
    second.set_image(synthetic_image(BRAIN, seed=1))
    first.add_click(BRAIN_CLICKS[0])
    second.add_click(BRAIN_CLICKS[0])
    assert state.kept_graph_count == 2  # no update yet: both graphs are still valid
    first.add_click(BRAIN_CLICKS[1])  # an update: the second session's graph is stale and dropped
    assert state.kept_graph_count == 1 and state.take_graph(second.session_id, 1) is None
    first.finish()  # no click follows
    assert state.kept_graph_count == 0

    bounded = ModelState(tiny_network(BRAIN), BRAIN, make_strategy("mid", BRAIN), max_kept_graphs=1)
    sessions = [InteractiveSession(bounded, undo_depth=0) for _ in range(3)]
    for seed, session in enumerate(sessions):
        session.set_image(synthetic_image(BRAIN, seed=seed))
        session.add_click(BRAIN_CLICKS[0])
    assert bounded.kept_graph_count == 1


def test_frozen_and_non_adapting_sessions_keep_no_graph() -> None:
    for state, adapt in ((tiny_state(BRAIN, "frozen"), True), (tiny_state(BRAIN, "oaims"), False)):
        session = InteractiveSession(state, adapt=adapt)
        session.set_image(synthetic_image(BRAIN))
        session.add_click(BRAIN_CLICKS[0])
        session.add_click(BRAIN_CLICKS[1])
        assert state.kept_graph_count == 0
