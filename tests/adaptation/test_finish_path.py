"""One finish path: "image finished" is an event of the model state, so every public door reaches its listeners."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from adaptation_testing import BRAIN_CLICKS, one_torch_thread, synthetic_image, tiny_state

from clickadapt.adaptation.model_state import FinishedImage
from clickadapt.adaptation.safety import SafetyConfig, attach_safety
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.models.checkpoint import CheckpointMeta
from clickadapt.models.factory import ModelConfig
from clickadapt.predictor import Predictor
from clickadapt.tasks import BRAIN


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


def test_the_session_announces_the_finished_image_with_the_accepted_mask() -> None:
    state = tiny_state(BRAIN, "oaims")
    heard: list[FinishedImage] = []
    state.add_finish_listener(heard.append)
    session = InteractiveSession(state, undo_depth=0)
    session.set_image(synthetic_image(BRAIN), image_id="img")
    for click in BRAIN_CLICKS[:2]:
        session.add_click(click)
    edited = np.zeros_like(session.predictions[-1])
    session.finish(final_mask=edited)
    [finished] = heard
    assert finished.image_id == "img" and finished.clicks == session.clicks and finished.first_version == 0
    np.testing.assert_array_equal(finished.final_mask, edited)  # the accepted mask, not the last prediction
    np.testing.assert_array_equal(finished.predictions[0], session.predictions[0])
    assert finished.report is session.finish_report


def test_session_finish_reaches_the_safety_layer() -> None:
    state = tiny_state(BRAIN, "oaims")
    monitor = attach_safety(state, SafetyConfig(window=3, min_images=3))
    session = InteractiveSession(state, undo_depth=0)
    session.set_image(synthetic_image(BRAIN), image_id="plain")
    session.add_click(BRAIN_CLICKS[0])
    session.finish()
    assert monitor.images_seen == 1 and [s.image_id for s in monitor.signals] == ["plain"]
    assert [record.image_id for record in monitor.history] == ["", "plain"]  # a snapshot after the image


def test_predictor_finish_reaches_the_safety_layer() -> None:
    state = tiny_state(BRAIN, "oaims")
    monitor = attach_safety(state)
    meta = CheckpointMeta(task="brain", model=ModelConfig(), preprocessing={"size": 32})
    predictor = Predictor(state, meta, monitor)
    predictor.set_image(synthetic_image(BRAIN, size=40)[0], image_id="from-python")
    predictor.add_click(20, 20, "lesion")
    predictor.finish()
    assert monitor.images_seen == 1 and monitor.signals[-1].image_id == "from-python"
