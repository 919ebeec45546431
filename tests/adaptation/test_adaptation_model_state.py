"""ModelState: snapshots, versions, listeners, strategy switching, several sessions from several threads."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator

import pytest
from adaptation_testing import (
    BRAIN_CLICKS,
    equal_states,
    one_torch_thread,
    synthetic_image,
    tiny_network,
    tiny_state,
    weights,
)

from clickadapt.adaptation.model_state import ModelState, UpdateEvent
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import make_strategy
from clickadapt.tasks import BRAIN, FUNDUS


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    yield from one_torch_thread()


def run_image(session: InteractiveSession, seed: int, clicks: int = 3) -> None:
    session.set_image(synthetic_image(BRAIN, seed=seed), f"img-{seed}")
    for click in BRAIN_CLICKS[:clicks]:
        session.add_click(click)
    session.finish()


def test_snapshot_restore_is_bit_exact_for_weights_optimizer_and_generator() -> None:
    state = tiny_state(BRAIN, "oaims", lr=1e-3)
    session = InteractiveSession(state)
    run_image(session, seed=0)  # moments and generator state are non-trivial now
    snapshot = state.snapshot()
    expected_weights, expected_strategy = weights(state.model), copy.deepcopy(state.strategy.state_dict())
    run_image(session, seed=1)
    assert not equal_states(weights(state.model), expected_weights)

    version = state.restore(snapshot)

    assert equal_states(weights(state.model), expected_weights)
    assert equal_states(state.strategy.state_dict(), expected_strategy)
    assert version == state.version == snapshot.version + 4  # 2 MI + 1 PI for image 1, then the restore
    # The snapshot stays intact: updating after a restore does not write into it.
    run_image(session, seed=2)
    assert equal_states(snapshot.model_state, expected_weights)


def test_versions_count_one_per_accepted_update_and_listeners_hear_each() -> None:
    state = tiny_state(BRAIN, "oaims", lr=1e-3)
    events: list[UpdateEvent] = []
    state.add_listener(events.append)
    session = InteractiveSession(state)
    session.set_image(synthetic_image(BRAIN), "img-a")
    for click in BRAIN_CLICKS[:4]:
        session.add_click(click)
    assert session.versions == [0, 1, 2, 3]  # no update at click 1, then one MI step per click
    session.finish()
    assert session.model_version == 4
    assert [event.kind for event in events] == ["click", "click", "click", "image"]
    assert [event.version for event in events] == [1, 2, 3, 4]
    assert all(event.strategy == "oaims" and event.image_id == "img-a" for event in events)
    assert set(events[0].losses) == {"dice_focal", "click_gaussian", "total"}
    assert "stage1_total" in events[-1].losses


def test_load_weights_and_set_strategy() -> None:
    state = tiny_state(BRAIN, "mid", lr=1e-3)
    other = tiny_network(BRAIN, seed=5)
    version = state.load_weights(other.state_dict())
    assert version == 1 and equal_states(weights(state.model), weights(other))
    state.set_strategy(make_strategy("frozen", BRAIN))
    assert state.strategy.name == "frozen" and state.version == 1
    with pytest.raises(ValueError, match="task 'fundus'"):
        state.set_strategy(make_strategy("mid", FUNDUS))
    snapshot = state.snapshot()
    state.set_strategy(make_strategy("post", BRAIN))
    with pytest.raises(ValueError, match="strategy 'frozen'"):
        state.restore(snapshot)


def test_strategy_for_another_task_or_model_is_rejected() -> None:
    with pytest.raises(ValueError, match="made for task 'fundus'"):
        ModelState(tiny_network(BRAIN), BRAIN, make_strategy("post", FUNDUS))
    strategy = make_strategy("post", BRAIN)
    ModelState(tiny_network(BRAIN), BRAIN, strategy)
    with pytest.raises(ValueError, match="already bound"):
        ModelState(tiny_network(BRAIN), BRAIN, strategy)


def test_two_sessions_in_two_threads_count_every_update_once() -> None:
    state = tiny_state(BRAIN, "oaims", lr=1e-3)
    heard: list[int] = []
    state.add_listener(lambda event: heard.append(event.version))
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            session = InteractiveSession(state)
            for image in range(3):
                run_image(session, seed=offset + image, clicks=3)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in (0, 10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    # 2 sessions × 3 images × (2 MI steps + 1 PI update) = 18 updates, each with its own version.
    assert state.version == 18
    assert sorted(heard) == list(range(1, 19))
