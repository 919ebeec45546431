"""Leak guard: nothing derived from the ground truth but the simulated user's clicks reaches a session or a strategy.

The most damaging leak a benchmark of online adaptation can have is a model that learns from the reference
label of the image it is being evaluated on (e.g. ``session.finish(final_mask=sample.label)`` in the stream
runner). These tests spy on both sides of the session for every stream engine entry point:

- the session: the image it is given is the sample's image, every click is a click of the simulated user
  (a pixel whose reference class is the click's class), and the mask accepted at ``finish`` is the one the
  session displayed last (``final_mask`` is ``None`` or equal to it);
- the strategy: no array or tensor of any event equals the reference label, and the pseudo-label of
  ``after_image`` is the session's last displayed mask.

The tiny random network never predicts the reference label exactly (checked), so "equals the label" can
only mean "was taken from the label".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from bench.long_stream_runner import StreamSegment, run_long_stream
from torch import nn

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.data.sample import Sample
from clickadapt.evaluation.stream import run_stream
from clickadapt.models.unet import ReferenceUNet
from clickadapt.tasks import BRAIN

SIZE = 32
ADAPTING = ["post", "mid", "oaims", "tsca", "ia-sa", "tent", "self-train"]


def lesion_sample(index: int) -> Sample:
    rng = np.random.default_rng(100 + index)
    label = np.zeros((SIZE, SIZE), dtype=np.int64)
    top, left = 5 + 2 * index, 6 + 3 * index
    label[top : top + 9, left : left + 11] = 1
    image = (label * 1.5 - 0.5 + 0.4 * rng.standard_normal((SIZE, SIZE))).astype(np.float32)[None]
    return Sample(image, label, "brain", "synthetic", "T1c", f"p{index}", None, "memory")


class LeakSpy:
    """Records what sessions and strategies receive and checks it against the reference labels."""

    def __init__(self, samples: list[Sample]) -> None:
        self.by_key = {sample.key: sample for sample in samples}
        self.displayed: dict[str, np.ndarray] = {}  # image id -> the mask its session displayed last
        self.current_key: str | None = None
        self.finished = 0
        self.strategy_events = 0
        self.problems: list[str] = []

    def label(self, key: str) -> np.ndarray:
        return self.by_key[key].label

    def check_arrays(self, where: str, event: Any, key: str) -> None:
        label = self.label(key)
        for item in dataclasses.fields(event):
            value = getattr(event, item.name)
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            if not isinstance(value, np.ndarray):
                continue
            candidates = [value]
            if value.ndim == 4 and value.shape[1] == BRAIN.num_classes:  # logits: compare their argmax too
                candidates.append(value[0].argmax(axis=0))
            for candidate in candidates:
                if candidate.shape == label.shape and np.array_equal(candidate, label):
                    self.problems.append(f"{where}: event field {item.name!r} equals the reference label of {key}")


@pytest.fixture()
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[list[Sample]], LeakSpy]]:
    """Install the session and strategy spies; returns a factory taking the stream's samples."""
    holder: dict[str, LeakSpy] = {}

    original_set_image = InteractiveSession.set_image
    original_add_click = InteractiveSession.add_click
    original_finish = InteractiveSession.finish
    original_state_init = ModelState.__init__

    def set_image(self: InteractiveSession, image: np.ndarray, image_id: str = "") -> None:
        guard = holder["spy"]
        if image_id not in guard.by_key:
            guard.problems.append(f"set_image with unknown id {image_id!r}")
        elif not np.array_equal(image, guard.by_key[image_id].image):
            guard.problems.append(f"set_image({image_id}) was given something other than the sample's image")
        guard.current_key = image_id
        original_set_image(self, image, image_id)

    def add_click(self: InteractiveSession, click: Any) -> np.ndarray:
        guard = holder["spy"]
        label = guard.label(self.image_id)
        if int(label[click.row, click.col]) != click.label:
            guard.problems.append(f"click {click} on {self.image_id} is not a simulated user's click")
        prediction = original_add_click(self, click)
        guard.displayed[self.image_id] = prediction.copy()
        return prediction

    def finish(self: InteractiveSession, final_mask: np.ndarray | None = None) -> np.ndarray:
        guard = holder["spy"]
        shown = guard.displayed.get(self.image_id)
        if final_mask is not None and (shown is None or not np.array_equal(final_mask, shown)):
            guard.problems.append(f"finish({self.image_id}) accepted a mask the session never displayed")
        accepted = original_finish(self, final_mask)
        if shown is None or not np.array_equal(accepted, shown):
            guard.problems.append(f"finish({self.image_id}) returned a mask other than the displayed one")
        if np.array_equal(accepted, guard.label(self.image_id)):
            guard.problems.append(f"finish({self.image_id}) accepted the reference label")
        guard.finished += 1
        return accepted

    def wrap(strategy: Any, hook: str) -> None:
        original = getattr(strategy, hook)

        def spied(event: Any) -> Any:
            guard = holder["spy"]
            key = event.image_id or guard.current_key
            if key in guard.by_key:
                guard.strategy_events += 1
                guard.check_arrays(f"{strategy.name}.{hook}", event, key)
                if hook == "after_image":
                    shown = guard.displayed.get(key)
                    if shown is None or not np.array_equal(event.final_mask.detach().cpu().numpy(), shown):
                        guard.problems.append(f"{strategy.name}.after_image got a pseudo-label never displayed")
            return original(event)

        setattr(strategy, hook, spied)

    def state_init(self: ModelState, *args: Any, **kwargs: Any) -> None:
        original_state_init(self, *args, **kwargs)
        for hook in ("begin_image", "after_click", "after_image"):
            wrap(self.strategy, hook)

    monkeypatch.setattr(InteractiveSession, "set_image", set_image)
    monkeypatch.setattr(InteractiveSession, "add_click", add_click)
    monkeypatch.setattr(InteractiveSession, "finish", finish)
    monkeypatch.setattr(ModelState, "__init__", state_init)

    def make(samples: list[Sample]) -> LeakSpy:
        holder["spy"] = LeakSpy(samples)
        return holder["spy"]

    yield make


def tiny_model() -> nn.Module:
    torch.manual_seed(3)
    return ReferenceUNet(BRAIN.input_channels, BRAIN.num_classes, widths=[4, 8], affine_norm=True)


@pytest.mark.parametrize("strategy", ["frozen", *ADAPTING])
def test_stream_runner_hands_sessions_and_strategies_nothing_but_clicks(
    strategy: str, spy: Callable[[list[Sample]], LeakSpy]
) -> None:
    samples = [lesion_sample(index) for index in range(2)]
    guard = spy(samples)
    result = run_stream(tiny_model(), BRAIN, samples, strategy, {}, budget=3, order_seed=0, click_seed=0)
    assert len(result.images) == 2 and guard.finished == 2
    # The precondition that makes "equals the label" mean "taken from the label": no mask was perfect.
    assert all(max(image.dice["lesion"]) < 1.0 for image in result.images)
    if strategy != "frozen":
        assert guard.strategy_events > 0
    assert guard.problems == []


def test_long_stream_engine_hands_sessions_and_strategies_nothing_but_clicks(
    spy: Callable[[list[Sample]], LeakSpy],
) -> None:
    samples = [lesion_sample(index) for index in range(3)]
    guard = spy(samples)
    result = run_long_stream(tiny_model(), BRAIN, [StreamSegment("A", samples)], "oaims", budget=2, progress=False)
    assert len(result.images) == 3 and guard.finished == 3 and guard.strategy_events > 0
    assert guard.problems == []


def test_the_guard_catches_a_stream_runner_that_finishes_with_the_ground_truth(
    monkeypatch: pytest.MonkeyPatch, spy: Callable[[list[Sample]], LeakSpy]
) -> None:
    """The mutation of issue 15: ``session.finish(final_mask=sample.label)``. The guard must flag it."""
    samples = [lesion_sample(index) for index in range(2)]
    guard = spy(samples)
    spied_finish = InteractiveSession.finish

    def leaking_finish(self: InteractiveSession, final_mask: np.ndarray | None = None) -> np.ndarray:
        return spied_finish(self, guard.label(self.image_id))

    monkeypatch.setattr(InteractiveSession, "finish", leaking_finish)
    run_stream(tiny_model(), BRAIN, samples, "oaims", {}, budget=2, order_seed=0, click_seed=0)
    assert any("never displayed" in problem for problem in guard.problems)
    assert any("reference label" in problem for problem in guard.problems)
