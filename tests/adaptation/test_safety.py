"""The safety layer: update guard, anchor, snapshot history, drift monitor and rollback."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from adaptation_testing import (
    BRAIN_CLICKS,
    equal_states,
    one_torch_thread,
    synthetic_image,
    tiny_state,
    weights,
)
from torch import nn

import clickadapt.adaptation.safety.monitor as monitor_module
import clickadapt.adaptation.session as session_module
from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.safety import (
    RehearsalConfig,
    SafetyConfig,
    SafetyMonitor,
    SentinelConfig,
    SnapshotRecord,
    attach_safety,
    image_signals,
)
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import (
    AdaptationStrategy,
    ClickEvent,
    ImageEvent,
    StepReport,
    StrategyConfig,
    make_strategy,
)
from clickadapt.adaptation.strategies.base import deep_copy_state
from clickadapt.clicks.click import Click
from clickadapt.evaluation.metrics import mean_region_dice
from clickadapt.tasks import BRAIN, FUNDUS, TaskSpec

SIZE = 24
CENTRE = Click(12, 12, 1)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


# ------------------------------------------------------------------------------------------ test doubles


class ThresholdNet(nn.Module):
    """Lesion where ``gain·image + 0.4·(lesion map − background map) > threshold``: predictable by hand.

    With threshold 0.5 it segments exactly the pixels brighter than 0.5 (click maps never exceed 1); with a
    threshold above 1.4 it segments nothing.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = nn.Parameter(torch.tensor(threshold))
        self.gain = nn.Parameter(torch.tensor(1.0))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        image, background_map, lesion_map = inputs[:, 0], inputs[:, 1], inputs[:, 2]
        lesion = self.gain * image + 0.4 * (lesion_map - background_map)
        return torch.stack([self.threshold.expand_as(lesion), lesion], dim=1)


def disk_image(distractor: bool = False) -> np.ndarray:
    """A disk of 1.0 (radius 5) at the centre; optionally a 0.6 blob in a corner."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    image = ((rows - 12) ** 2 + (cols - 12) ** 2 <= 25).astype(np.float32)
    if distractor:
        image[1:5, 1:5] = 0.6
    return image[None]


def disk_mask() -> np.ndarray:
    return disk_image()[0].astype(np.int64)


class ScriptedStrategy(AdaptationStrategy):
    """Changes the weights at every click from the second on by a scripted function of the click index."""

    name: ClassVar[str] = "scripted"

    def __init__(self, change: dict[int, tuple[float, dict[str, float]]]) -> None:
        super().__init__(BRAIN, StrategyConfig(lr=1e-3))
        self.change = change  # click index → (amount added to every parameter, reported losses)

    def updates_on_click(self, click_index: int) -> bool:
        return click_index in self.change

    def after_click(self, event: ClickEvent) -> StepReport | None:
        amount, losses = self.change[event.click_index]
        loss = event.forward(event.clicks, grad=True).mean()  # a real Adam step changes the optimizer state
        self.gradient_step(loss)
        with torch.no_grad():
            for parameter in self.model.parameters():
                parameter.add_(amount)
        return StepReport(updated=True, losses=losses, steps=1)

    def after_image(self, event: ImageEvent) -> StepReport | None:
        return None


def click_through(state: ModelState, clicks: list[Click], image: np.ndarray | None = None) -> InteractiveSession:
    session = InteractiveSession(state, undo_depth=0)
    session.set_image(disk_image() if image is None else image, image_id="img")
    for click in clicks:
        session.add_click(click)
    return session


# ------------------------------------------------------------------------------------------ update guard


def test_guard_rejects_a_non_finite_loss_and_restores_weights_and_optimizer_bit_for_bit() -> None:
    strategy = ScriptedStrategy({1: (0.0, {"total": 0.5}), 2: (0.0, {"total": math.nan})})
    state = ModelState(ThresholdNet(), BRAIN, strategy)
    monitor = attach_safety(state, SafetyConfig(monitor=False))
    session = click_through(state, [CENTRE, Click(1, 1, 0)])  # click 2: an accepted real Adam step
    before_weights, before_optimizer = weights(state.model), deep_copy_state(strategy.state_dict())
    assert before_optimizer["optimizer"]["state"]  # Adam moments exist
    session.add_click(Click(2, 2, 0))  # click 3: a step that reports a NaN loss
    assert equal_states(weights(state.model), before_weights)
    assert equal_states(strategy.state_dict(), before_optimizer)
    assert [event.kind for event in monitor.events] == ["update_rejected"]
    assert "loss not finite (total=nan)" in monitor.events[0].reason
    assert monitor.events[0].version == state.version


def test_guard_rejects_a_huge_step_and_the_session_shows_the_restored_weights() -> None:
    strategy = ScriptedStrategy({1: (5.0, {"total": 0.5})})  # θ = (0.5, 1) + 5: ‖Δθ‖/‖θ‖ ≈ 6.3
    state = ModelState(ThresholdNet(), BRAIN, strategy)
    monitor = attach_safety(state, SafetyConfig(monitor=False))
    before = weights(state.model)
    session = click_through(state, [CENTRE, Click(1, 1, 0)])
    assert equal_states(weights(state.model), before)
    assert monitor.counts() == {"update_rejected": 1, "rollback": 0, "drift_unresolved": 0, "sentinel_pullback": 0}
    assert "above the limit 0.05" in monitor.events[0].reason
    np.testing.assert_array_equal(session.predictions[-1], disk_mask())  # the original model's mask


def test_guard_rejects_a_step_far_above_the_running_median() -> None:
    # Ten small steps (+1e-5 per weight) set the median; then one 100× larger (still < 5 % of ‖θ‖).
    change = {index: (1e-5, {"total": 0.1}) for index in range(1, 11)}
    change[11] = (1e-3, {"total": 0.1})
    strategy = ScriptedStrategy(change)
    strategy.gradient_step = lambda loss: True  # type: ignore[method-assign]  # only the scripted change
    state = ModelState(ThresholdNet(), BRAIN, strategy)
    monitor = attach_safety(state, SafetyConfig(monitor=False, step_median_after=10))
    clicks = [CENTRE] + [Click(0, index, 0) for index in range(11)]
    click_through(state, clicks)
    assert [event.kind for event in monitor.events] == ["update_rejected"]
    assert "× the median" in monitor.events[0].reason
    assert state.model.threshold.item() == pytest.approx(0.5 + 10 * 1e-5, abs=1e-6)


def test_normal_oaims_updates_pass_the_guard() -> None:
    state = tiny_state(BRAIN, "oaims")
    monitor = attach_safety(state, SafetyConfig(monitor=False))
    session = InteractiveSession(state, undo_depth=0)
    session.set_image(synthetic_image(BRAIN), image_id="a")
    for click in BRAIN_CLICKS:
        session.add_click(click)
    session.finish()
    assert state.version >= 2 and monitor.events == [] and monitor.images_seen == 1


def test_anchor_pulls_accepted_updates_towards_the_source_weights() -> None:
    strategy = ScriptedStrategy({1: (0.01, {"total": 0.1})})
    strategy.gradient_step = lambda loss: True  # type: ignore[method-assign]
    state = ModelState(ThresholdNet(), BRAIN, strategy)
    attach_safety(state, SafetyConfig(monitor=False, anchor_rate=0.25))
    click_through(state, [CENTRE, Click(1, 1, 0)])
    # θ = θ_src + 0.01, then θ ← θ − 0.25·(θ − θ_src) = θ_src + 0.0075
    assert state.model.threshold.item() == pytest.approx(0.5075, abs=1e-6)
    assert state.model.gain.item() == pytest.approx(1.0075, abs=1e-6)


def test_undo_restores_are_accepted_without_a_rejection() -> None:
    state = tiny_state(BRAIN, "mid")
    monitor = attach_safety(state, SafetyConfig(monitor=False))
    session = InteractiveSession(state, undo_depth=3)
    session.set_image(synthetic_image(BRAIN))
    for click in BRAIN_CLICKS[:3]:
        session.add_click(click)
    session.undo()
    session.add_click(BRAIN_CLICKS[2])
    assert monitor.events == [] and session.last_undo is not None and session.last_undo.restored_weights


# ------------------------------------------------------------------------------------------ signals


def test_image_signals_by_hand() -> None:
    final = np.zeros((4, 4), dtype=np.int64)
    final[:2, :2] = 1  # 4 lesion pixels
    first = np.zeros((4, 4), dtype=np.int64)
    first[0, :2] = 1  # 2 of them: Dice 2·2/(2+4) = 2/3
    middle = final.copy()
    middle[3, 3] = 1  # Dice 2·4/(5+4) = 0.889 < 0.9
    clicks = [Click(0, 0, 1), Click(1, 1, 1), Click(3, 3, 0)]
    first_final, to_final, agreement = image_signals([first, middle, final], clicks, BRAIN, 0.9)
    assert first_final == pytest.approx(2 / 3)
    assert to_final == 3
    assert agreement == pytest.approx(0.5)  # (1, 1) lesion: first says 0 ✘; (3, 3) background ✔
    assert mean_region_dice(np.zeros((4, 4), np.int64), np.zeros((4, 4), np.int64), FUNDUS) == 1.0


# ------------------------------------------------------------------------------------------ drift monitor


def monitored(threshold: float = 0.5, **config: float | int | str | bool) -> tuple[ModelState, SafetyMonitor]:
    state = ModelState(ThresholdNet(threshold), BRAIN, make_strategy("frozen", BRAIN))
    settings = {"window": 4, "min_images": 4, "max_drop": 0.1, **config}
    return state, attach_safety(state, SafetyConfig.model_validate(settings))


def half_disk() -> np.ndarray:
    mask = disk_mask()
    mask[:, 12:] = 0
    return mask


def record(monitor: SafetyMonitor, first: np.ndarray, image: np.ndarray | None = None) -> None:
    """One finished image whose final (accepted) mask is the disk and whose first-click prediction is ``first``."""
    clicks = [CENTRE, Click(12, 9, 1)]
    monitor.record_image(disk_image() if image is None else image, clicks, [first, disk_mask()], image_id="x")


def test_monitor_stays_quiet_on_a_stable_stream() -> None:
    _, monitor = monitored()
    for _ in range(12):
        record(monitor, disk_mask())
    assert monitor.events == []
    assert [s.first_final_dice for s in monitor.signals] == [1.0] * 12
    assert [s.source_first_final_dice for s in monitor.signals] == [1.0] * 12  # the source segments the disk


def test_monitor_rolls_back_bit_for_bit_when_the_model_degrades() -> None:
    state, monitor = monitored()
    source = weights(state.model)
    for _ in range(3):
        record(monitor, disk_mask())
    state.load_weights({"threshold": torch.tensor(1.5), "gain": torch.tensor(1.0)})  # silently broken weights
    record(monitor, np.zeros((SIZE, SIZE), np.int64))  # … whose first-click prediction is empty
    # Margins to the source over the window of 4: 0, 0, 0, −1 → mean −0.25 < −0.1: fires at image 3.
    assert [event.kind for event in monitor.events] == ["rollback"]
    event = monitor.events[0]
    assert event.image_index == 3 and event.restored_version == 0 and event.version == state.version
    assert "current weights 0.000" in event.reason and "1.000" in event.reason
    assert equal_states(weights(state.model), source)


def test_monitor_prefers_a_better_snapshot_to_the_source() -> None:
    state, monitor = monitored()
    image = disk_image(distractor=True)  # the source (threshold 0.5) also segments the 0.6 distractor
    state.load_weights({"threshold": torch.tensor(0.8), "gain": torch.tensor(1.0)})  # adapted: ignores it
    adapted = weights(state.model)
    for _ in range(4):
        record(monitor, disk_mask(), image)  # margin 1 − 0.91 each
    state.load_weights({"threshold": torch.tensor(1.5), "gain": torch.tensor(1.0)})
    record(monitor, np.zeros((SIZE, SIZE), np.int64), image)
    assert [event.kind for event in monitor.events] == ["rollback"]
    assert "snapshot after image 3" in monitor.events[0].reason
    assert equal_states(weights(state.model), adapted)
    assert not monitor.history[-1].good or monitor.history[-1].image_index == 4


def test_drift_without_a_better_candidate_changes_nothing() -> None:
    state, monitor = monitored(reference="window", window=2, min_images=2)
    for _ in range(2):
        record(monitor, disk_mask())  # reference window: first-click agreement 1.0
    for _ in range(2):
        record(monitor, half_disk())  # agreement 2·(40)/(40+81) ≈ 0.66: a drop of 0.34
    assert [event.kind for event in monitor.events] == ["drift_unresolved"]
    assert "weights kept" in monitor.events[0].reason  # every candidate is the same model: none is better
    assert equal_states(weights(state.model), weights(ThresholdNet()))


def test_a_config_replaced_while_an_image_finishes_takes_effect_at_the_next_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clickadapt.adaptation.safety import drift

    _, monitor = monitored(reference="window", window=2, min_images=2)
    signals_of = drift.image_signals

    def replaced_meanwhile(
        predictions: Sequence[np.ndarray], clicks: Sequence[Click], task: TaskSpec, threshold: float
    ) -> tuple[float, int, float]:
        # another thread switches the reference while the image is being finished
        monitor.config = monitor.config.model_copy(update={"reference": "source"})
        return signals_of(predictions, clicks, task, threshold)

    monkeypatch.setattr(drift, "image_signals", replaced_meanwhile)
    record(monitor, disk_mask())  # measured against the window reference it started with
    monkeypatch.undo()
    record(monitor, disk_mask())  # the source reference from now on
    assert [s.source_first_final_dice for s in monitor.signals] == [None, 1.0] and monitor.events == []


def test_switching_the_reference_starts_the_window_again() -> None:
    _, monitor = monitored()  # window 4, reference "source"
    for _ in range(3):
        record(monitor, disk_mask())  # margins to the source model: 0
    monitor.config = monitor.config.model_copy(update={"reference": "window"})
    for _ in range(6):
        record(monitor, disk_mask())  # agreement 1.0, as the reference window's: no drift
    assert monitor.events == []


def test_snapshot_history_is_bounded_and_spaced() -> None:
    _, monitor = monitored(recent_snapshots=4, sparse_snapshot_every=10, sparse_snapshots=3, monitor=False)
    for _ in range(50):
        record(monitor, disk_mask())
    assert [record.image_index for record in monitor.history] == [-1, 20, 30, 40, 46, 47, 48, 49]


def test_finishing_real_sessions_through_the_monitor() -> None:
    state = tiny_state(BRAIN, "oaims")
    monitor = attach_safety(state, SafetyConfig(window=3, min_images=3))
    for seed in range(2):
        session = InteractiveSession(state, undo_depth=0)
        session.set_image(synthetic_image(BRAIN, seed), image_id=f"img{seed}")
        for click in BRAIN_CLICKS[:3]:
            session.add_click(click)
        final = session.finish()  # the monitor is a finish listener of the session's model
        np.testing.assert_array_equal(final, session.final_mask)
    assert [s.image_id for s in monitor.signals] == ["img0", "img1"]
    assert all(s.source_first_final_dice is not None and s.clicks == 3 for s in monitor.signals)
    assert [r.image_index for r in monitor.history] == [-1, 0, 1] and monitor.images_seen == 2


def test_monitor_hears_only_its_own_model_and_refuses_malformed_input() -> None:
    state, monitor = monitored()
    session = InteractiveSession(state)
    session.set_image(disk_image())
    session.add_click(CENTRE)
    assert monitor.images_seen == 0  # an unfinished image is not heard
    other = click_through(ModelState(ThresholdNet(), BRAIN), [CENTRE])
    other.finish()
    assert monitor.images_seen == 0 and list(monitor.signals) == []  # another model's image neither
    monitor.detach()
    session.finish()
    assert monitor.images_seen == 0  # nor anything after detaching
    with pytest.raises(ValueError, match=r"C = 1"):
        monitor.record_image(np.zeros((3, SIZE, SIZE), np.float32), [CENTRE], [disk_mask()])
    with pytest.raises(ValueError, match="prediction 0 has shape"):
        monitor.record_image(disk_image(), [CENTRE], [np.zeros((5, 5), np.int64)])
    with pytest.raises(ValueError, match="no prediction"):
        monitor.record_image(disk_image(), [], [])


# ------------------------------------------------------------------------------------------ source sentinel


def sentinel_state(every: int = 1) -> tuple[ModelState, SafetyMonitor]:
    state = ModelState(ThresholdNet(), BRAIN)
    config = SafetyConfig(monitor=False, sentinel=SentinelConfig(every=every, budget=1, max_drop=0.005))
    return state, attach_safety(state, config, sentinel_images=[(disk_image(), disk_mask())])


def finish_one(state: ModelState, monitor: SafetyMonitor) -> None:
    click_through(state, [CENTRE]).finish()
    assert monitor.images_seen > 0


def test_sentinel_pulls_forgotten_weights_back_along_the_line_to_the_source() -> None:
    state, monitor = sentinel_state()
    assert monitor.sentinel_source_score == pytest.approx(1.0)  # threshold 0.5 segments the disk exactly
    state.load_weights({"threshold": torch.tensor(1.3), "gain": torch.tensor(1.0)})  # only pixels near the click
    finish_one(state, monitor)
    [event] = monitor.events
    assert event.kind == "sentinel_pullback" and "α=0.75" in event.reason
    # θ_src + 0.75·(θ − θ_src) = 0.5 + 0.75·0.8 = 1.1: the click map lifts the whole disk above it again
    assert state.model.threshold.item() == pytest.approx(1.1, abs=1e-6)
    [check] = monitor.sentinel_checks
    assert check["score"] < 0.9 and check["alpha"] == 0.75 and check["blended_score"] == pytest.approx(1.0)


def test_sentinel_goes_back_to_the_source_when_no_blend_is_good_enough() -> None:
    state, monitor = sentinel_state()
    state.load_weights({"threshold": torch.tensor(4.5), "gain": torch.tensor(1.0)})  # segments nothing
    finish_one(state, monitor)
    assert [event.kind for event in monitor.events] == ["sentinel_pullback"]
    assert monitor.sentinel_checks[0]["alpha"] == 0.0
    assert state.model.threshold.item() == pytest.approx(0.5) and state.model.gain.item() == pytest.approx(1.0)


def test_sentinel_checks_on_schedule_and_leaves_good_weights_alone() -> None:
    state, monitor = sentinel_state(every=2)
    finish_one(state, monitor)
    assert monitor.sentinel_checks == []
    finish_one(state, monitor)
    assert [check["alpha"] for check in monitor.sentinel_checks] == [None] and monitor.events == []
    assert state.model.threshold.item() == pytest.approx(0.5)


def test_sentinel_blends_carry_a_real_version_and_are_never_taken_for_a_kept_snapshot() -> None:
    from clickadapt.adaptation.safety import SourceSentinel

    state, monitor = sentinel_state(every=1000)  # no check on its own
    state.load_weights({"threshold": torch.tensor(1.3), "gain": torch.tensor(1.0)})  # only pixels near the click
    finish_one(state, monitor)
    kept = monitor.history[-1]  # the live weights, kept at the live version
    sentinel = monitor.part(SourceSentinel)
    assert sentinel is not None and kept.version == state.version
    blend = sentinel._blend(0.5)  # threshold 0.9: the whole disk
    assert blend.version == state.version and blend.transient  # no made-up (negative) version
    image = torch.from_numpy(disk_image())

    def probed(record: SnapshotRecord | None) -> int:
        monitor.load_probe(record)
        return int(monitor.probe_prediction(image, [CENTRE], 5.0).sum())

    near_click, disk = probed(kept), int(disk_mask().sum())
    assert near_click < disk
    assert probed(blend) == disk  # not the kept snapshot of the same version
    assert probed(kept) == near_click  # and the kept snapshot is not the blend
    from clickadapt.adaptation.safety.snapshots import SOURCE_IMAGE_INDEX

    assert [record.image_index for record in monitor.history] == [SOURCE_IMAGE_INDEX, 0]


def test_sentinel_refuses_images_it_cannot_use() -> None:
    state = ModelState(ThresholdNet(), BRAIN)
    with pytest.raises(ValueError, match="no foreground"):
        attach_safety(state, sentinel_images=[(disk_image(), np.zeros((SIZE, SIZE), dtype=np.int64))])
    with pytest.raises(ValueError, match="sentinel images must be"):
        attach_safety(state, sentinel_images=[(disk_image()[0], disk_mask())])


# ------------------------------------------------------------------------------------------ source rehearsal


class RecordingStrategy(AdaptationStrategy):
    """Records every hook call; each image update adds ``image_step`` to every parameter (a scripted loss)."""

    name: ClassVar[str] = "recording"

    def __init__(self, image_loss: float = 0.1) -> None:
        super().__init__(BRAIN, StrategyConfig(lr=1e-3))
        self.image_loss = image_loss
        self.click_calls = 0
        self.images: list[tuple[str, tuple[Click, ...], np.ndarray, np.ndarray]] = []

    def updates_on_click(self, click_index: int) -> bool:
        return True

    def after_click(self, event: ClickEvent) -> StepReport | None:
        self.click_calls += 1
        return None

    def after_image(self, event: ImageEvent) -> StepReport | None:
        self.images.append((event.image_id, event.clicks, event.image.cpu().numpy(), event.final_mask.cpu().numpy()))
        with torch.no_grad():
            for parameter in self.model.parameters():
                parameter.add_(0.01)
        return StepReport(updated=True, losses={"total": self.image_loss}, steps=1)


def ring_mask() -> np.ndarray:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    return ((rows - 8) ** 2 + (cols - 16) ** 2 <= 9).astype(np.int64)


def test_rehearsal_replays_labelled_source_images_through_the_image_update_on_schedule() -> None:
    strategy = RecordingStrategy()
    state = ModelState(ThresholdNet(), BRAIN, strategy)
    rehearsal = [(disk_image(), disk_mask()), (ring_mask()[None].astype(np.float32), ring_mask())]
    config = SafetyConfig(monitor=False, rehearsal=RehearsalConfig(every=2, images=2))
    monitor = attach_safety(state, config, rehearsal_images=rehearsal)
    finish_one(state, monitor)
    assert [image_id for image_id, *_ in strategy.images] == ["img"] and monitor.rehearsals == 0
    clicks_before = strategy.click_calls
    finish_one(state, monitor)
    replayed = strategy.images[2:]  # after the second stream image's own update
    assert sorted(image_id for image_id, *_ in replayed) == ["rehearsal:0", "rehearsal:1"]
    assert strategy.click_calls == clicks_before + 1  # the stream image's click only: no click-time update
    for image_id, clicks, image, final_mask in replayed:
        source_image, label = rehearsal[int(image_id.split(":")[1])]
        np.testing.assert_array_equal(image, source_image)
        np.testing.assert_array_equal(final_mask, label)  # the reference label stands in for the user's mask
        [click] = clicks
        assert click.label == 1 and label[click.row, click.col] == 1  # the simulated first click is on the object
    assert monitor.rehearsals == 2 and state.version == 4  # two stream images + two rehearsed ones


def test_sentinel_and_rehearsal_click_with_the_models_own_click_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model trained with narrow click maps (the shipped brain model: σ 2 px) is probed by the sentinel and
    rehearsed with them, not with the default σ of 5 px."""
    sigmas: dict[str, list[float]] = {"probe": [], "session": []}

    def spy(kind: str, original: Any) -> Any:
        def model_input(image: Any, clicks: Any, num_classes: int, sigma: float) -> torch.Tensor:
            sigmas[kind].append(sigma)
            return original(image, clicks, num_classes, sigma)

        return model_input

    monkeypatch.setattr(monitor_module, "model_input", spy("probe", monitor_module.model_input))
    state = ModelState(ThresholdNet(), BRAIN, RecordingStrategy())
    config = SafetyConfig(
        monitor=False, sentinel=SentinelConfig(every=1, budget=2), rehearsal=RehearsalConfig(every=1, images=1)
    )
    rehearsal = [(ring_mask()[None].astype(np.float32), ring_mask())]
    monitor = attach_safety(
        state, config, sentinel_images=[(disk_image(), disk_mask())], rehearsal_images=rehearsal, click_sigma=2.0
    )
    assert monitor.click_sigma == 2.0 and sigmas["probe"] and set(sigmas["probe"]) == {2.0}  # the source score
    session = click_through(state, [CENTRE])
    monkeypatch.setattr(session_module, "model_input", spy("session", session_module.model_input))
    sigmas["probe"].clear()
    session.finish()
    assert monitor.rehearsals == 1 and set(sigmas["session"]) == {2.0}  # the rehearsed image's click
    assert sigmas["probe"] and set(sigmas["probe"]) == {2.0}  # the sentinel's check after the image


def test_rehearsal_updates_pass_the_guard() -> None:
    strategy = RecordingStrategy(image_loss=math.nan)
    state = ModelState(ThresholdNet(), BRAIN, strategy)
    monitor = attach_safety(state, SafetyConfig(monitor=False), rehearsal_images=[(disk_image(), disk_mask())])
    finish_one(state, monitor)
    assert [event.image_id for event in monitor.events] == ["img", "rehearsal:0"]
    assert all(event.kind == "update_rejected" for event in monitor.events)
    assert state.model.threshold.item() == pytest.approx(0.5)  # both non-finite updates undone


def test_rehearsal_with_oaims_changes_the_weights_of_a_real_network() -> None:
    state = tiny_state(BRAIN, "oaims")
    label = (synthetic_image(BRAIN, 3)[0] > 0.5).astype(np.int64)
    before: dict[str, torch.Tensor] = {}
    # Heard before the safety layer, for the user's image only (the rehearsed image is finished inside it).
    state.add_finish_listener(lambda finished: None if before else before.update(weights(state.model)))
    monitor = attach_safety(state, SafetyConfig(monitor=False), rehearsal_images=[(synthetic_image(BRAIN, 3), label)])
    session = InteractiveSession(state, undo_depth=0)
    session.set_image(synthetic_image(BRAIN, 0), image_id="img")
    session.add_click(BRAIN_CLICKS[0])
    session.finish()  # the strategy's own image update, then the rehearsal
    assert before and monitor.rehearsals == 1 and not equal_states(weights(state.model), before)
    assert monitor.images_seen == 1  # the rehearsed image is not counted as a user's image


def test_rehearsal_refuses_images_it_cannot_use() -> None:
    state = ModelState(ThresholdNet(), BRAIN)
    with pytest.raises(ValueError, match=r"rehearsal label holds classes 0\.\.3"):
        attach_safety(state, rehearsal_images=[(disk_image(), disk_mask() * 3)])
    with pytest.raises(ValueError, match="rehearsal image contains NaN"):
        attach_safety(state, rehearsal_images=[(disk_image() * np.nan, disk_mask())])
    with pytest.raises(ValueError, match="rehearsal images must be"):
        attach_safety(state, rehearsal_images=[(disk_image()[0], disk_mask())])


@pytest.mark.parametrize("blends", [(), (0.5, 1.5), (-0.25,)])
def test_sentinel_blends_outside_zero_to_one_are_refused_by_name(blends: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="blends"):
        SentinelConfig(blends=blends)
    assert SentinelConfig(blends=(1.0, 0.0)).blends == (1.0, 0.0)
