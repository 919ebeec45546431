"""Long streams that switch domains, with the safety layer in the loop.

A long stream is a list of segments (e.g. target A → target B → source), each a list of samples. The
runner drives one :class:`~clickadapt.adaptation.session.InteractiveSession` per image on one shared
:class:`~clickadapt.adaptation.model_state.ModelState`, exactly like the prequential stream runner, and
optionally attaches the safety layer (:func:`~clickadapt.adaptation.safety.attach_safety`), which hears
every finished image. It also keeps the weights at the end of each segment, so that forgetting can be measured
at every domain switch. The caller's model is copied and never changed.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from clickadapt.adaptation.domains import DomainScopedModels, SourceMode
from clickadapt.adaptation.model_state import ModelState, StateSnapshot
from clickadapt.adaptation.safety import RollbackHook, SafetyConfig, attach_safety
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import make_strategy
from clickadapt.clicks.encoding import DEFAULT_CLICK_SIGMA
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.data.sample import Sample
from clickadapt.evaluation.stream import click_through
from clickadapt.tasks import TaskSpec

logger = logging.getLogger(__name__)


@dataclass
class StreamSegment:
    """One domain of a long stream.

    Attributes:
        name: Name in reports (``"A: BRATS T1c"``).
        samples: Its images, in dataset order (shuffled by the runner with ``order_seed``).
        source_domain: Whether these images come from the model's source domain.
    """

    name: str
    samples: list[Sample]
    source_domain: bool = False


@dataclass
class LongStreamImage:
    """What happened on one image of a long stream.

    Attributes:
        position: 0-based place in the whole stream.
        segment: Index of its segment.
        key: The sample's key.
        clicks: Clicks made (fewer than the budget when the mask became perfect).
        dice: Per region, the Dice against the ground truth after clicks 1..budget (the last value repeats
            after a perfect mask).
        version_first: Model version that produced the first-click prediction.
        version_after: Model version after the image was finished (and checked by the safety layer).
        seconds: Wall-clock seconds of the whole image (clicks, updates, safety).
        events: Safety events raised while the image was processed (as dicts).
    """

    position: int
    segment: int
    key: str
    clicks: int
    dice: dict[str, list[float]]
    version_first: int
    version_after: int
    seconds: float
    events: list[dict[str, Any]] = field(default_factory=list)

    def mean_dice(self, click: int) -> float:
        """Mean over regions of the Dice after the 1-based ``click``."""
        return float(np.mean([values[click - 1] for values in self.dice.values()]))


@dataclass
class StreamFork:
    """The state of a guarded run just before the safety layer first acted (or at its end if it never did).

    Until the safety layer acts it only reads, so an unguarded run of the same strategy is bit-identical up
    to that image; :func:`run_long_stream` can resume an unguarded run from here instead of recomputing the
    shared prefix.

    Attributes:
        stream_index: Index into the ordered stream of the first image not yet shared.
        state: Weights and strategy state before that image.
        images: The shared records before it.
        skipped: Keys skipped before it.
        segment_end_weights: Segment-end weights recorded before it.
    """

    stream_index: int
    state: StateSnapshot
    images: list[LongStreamImage]
    skipped: list[str]
    segment_end_weights: list[dict[str, torch.Tensor]]


@dataclass
class LongStreamResult:
    """One strategy (with or without the safety layer) over one long stream.

    Attributes:
        label: Name in reports.
        strategy: Strategy name.
        overrides: Its configuration overrides.
        safety: The safety settings, ``None`` = unguarded.
        task: Task name.
        regions: Reported regions.
        segments: Segment names, in stream order.
        budget: Clicks per image.
        images: Per image, in stream order.
        skipped: Keys of samples with an empty label.
        events: All safety events (dicts).
        signals: The safety layer's ground-truth-free signals per image (dicts).
        segment_end_weights: Weights at the end of each segment (not serialised).
        final_model: The adapted network at the end (not serialised).
        fork: Guarded runs: where an unguarded run would part from this one (not serialised).
        resumed_at: Runs resumed from a fork: the position of the first image they computed themselves.
        sentinel_checks: Guarded runs with a source sentinel: every check (see ``SafetyMonitor``).
        rehearsals: Guarded runs with a source rehearsal: labelled source images replayed.
        domain_end_weights: Domain-scoped runs: the weights of every adapted domain at the end (not serialised).
    """

    label: str
    strategy: str
    overrides: dict[str, Any]
    safety: dict[str, Any] | None
    task: str
    regions: list[str]
    segments: list[str]
    budget: int
    images: list[LongStreamImage] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    signals: list[dict[str, Any]] = field(default_factory=list)
    segment_end_weights: list[dict[str, torch.Tensor]] = field(default_factory=list, repr=False)
    final_model: nn.Module | None = field(default=None, repr=False)
    fork: StreamFork | None = field(default=None, repr=False)
    resumed_at: int | None = None
    sentinel_checks: list[dict[str, Any]] = field(default_factory=list)
    rehearsals: int = 0
    domain_end_weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    def dice_at(self, click: int) -> np.ndarray:
        """Per image, the mean-over-regions Dice after the 1-based ``click``."""
        return np.asarray([image.mean_dice(click) for image in self.images], dtype=np.float64)

    def segment_mask(self, segment: int) -> np.ndarray:
        """Boolean mask of the images of one segment."""
        return np.asarray([image.segment == segment for image in self.images], dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of everything but the weights."""
        return {
            "label": self.label,
            "strategy": self.strategy,
            "overrides": self.overrides,
            "safety": self.safety,
            "task": self.task,
            "regions": self.regions,
            "segments": self.segments,
            "budget": self.budget,
            "resumed_at": self.resumed_at,
            "skipped": self.skipped,
            "events": self.events,
            "signals": self.signals,
            "sentinel_checks": self.sentinel_checks,
            "rehearsals": self.rehearsals,
            "images": [
                {
                    "position": image.position,
                    "segment": image.segment,
                    "key": image.key,
                    "clicks": image.clicks,
                    "dice": image.dice,
                    "version_first": image.version_first,
                    "version_after": image.version_after,
                    "seconds": image.seconds,
                    "events": image.events,
                }
                for image in self.images
            ],
        }


def user_seed(click_seed: int, key: str) -> int:
    """The simulated user's seed for one image: the run's seed combined with the sample key.

    Same derivation as the prequential stream runner, so the first click on an image does not depend on
    its position or on the strategy.
    """
    key_digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return int(np.random.SeedSequence([click_seed, key_digest]).generate_state(1)[0])


def ordered_stream(segments: Sequence[StreamSegment], order_seed: int | None) -> list[tuple[int, Sample]]:
    """``(segment index, sample)`` in stream order: segments in order, each shuffled with ``order_seed``.

    ``None`` keeps every segment's dataset order.
    """
    stream: list[tuple[int, Sample]] = []
    for index, segment in enumerate(segments):
        order = (
            range(len(segment.samples))
            if order_seed is None
            else np.random.default_rng([order_seed, index]).permutation(len(segment.samples))
        )
        stream.extend((index, segment.samples[int(i)]) for i in order)
    return stream


def run_long_stream(
    model: nn.Module,
    task: TaskSpec,
    segments: Sequence[StreamSegment],
    strategy_name: str,
    strategy_overrides: dict[str, Any] | None = None,
    safety: SafetyConfig | None = None,
    *,
    label: str | None = None,
    user_name: str = "oaims",
    budget: int = 10,
    click_seed: int = 0,
    order_seed: int | None = 0,
    click_sigma: float = DEFAULT_CLICK_SIGMA,
    device: str = "cpu",
    rollback_hook: RollbackHook | None = None,
    resume_from: StreamFork | None = None,
    sentinel_images: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    rehearsal_images: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    progress: bool = True,
) -> LongStreamResult:
    """Process a long, domain-switching stream prequentially with a simulated user.

    Args:
        model: Source model; copied, never changed.
        task: Its task.
        segments: The domains, in stream order.
        strategy_name: Adaptation strategy (``make_strategy`` name).
        strategy_overrides: Its configuration overrides.
        safety: Attach the safety layer with these settings; ``None`` = unguarded.
        label: Name in reports (default: the strategy name, ``+safety`` when guarded).
        user_name: Simulated user.
        budget: Clicks per image.
        click_seed: Seed of the simulated user (combined with each sample key).
        order_seed: Seed of the shuffle inside each segment; ``None`` keeps dataset order.
        click_sigma: σ of the click maps.
        device: Torch device.
        rollback_hook: Called after each rollback of the safety layer (see ``SafetyMonitor.add_rollback_hook``).
        resume_from: Start from a guarded run's :attr:`LongStreamResult.fork` (same stream, strategy, seeds):
            its shared records are copied and only the rest of the stream is computed.
        sentinel_images: Labelled source images for the safety layer's source sentinel (guarded runs).
        rehearsal_images: Labelled source images for the safety layer's source rehearsal (guarded runs).
        progress: Show a progress bar when stderr is a terminal.

    Returns:
        Per-image Dice curves, safety events and signals, the weights at each segment's end, and (when
        guarded) the fork where an unguarded run would part from it.

    Raises:
        ValueError: For a budget below 1, a sample of another task, an unknown strategy or user, or a fork
            of another strategy.
    """
    _check_stream_inputs(task, segments, budget, user_name, click_seed)
    overrides = dict(strategy_overrides or {})
    working = copy.deepcopy(model).to(device)
    state = ModelState(working, task, make_strategy(strategy_name, task, **overrides), device)
    monitor = (
        attach_safety(state, safety, sentinel_images, rehearsal_images, click_sigma=click_sigma)
        if safety is not None
        else None
    )
    if monitor is not None and rollback_hook is not None:
        monitor.add_rollback_hook(rollback_hook)
    result = LongStreamResult(
        label=label or (f"{strategy_name}+safety" if safety is not None else strategy_name),
        strategy=strategy_name,
        overrides=overrides,
        safety=safety.model_dump() if safety is not None else None,
        task=task.name,
        regions=list(task.regions),
        segments=[segment.name for segment in segments],
        budget=budget,
        final_model=working,
    )
    stream = ordered_stream(segments, order_seed)
    start = 0
    if resume_from is not None:
        state.restore(resume_from.state)  # raises ValueError for another strategy's state
        start = resume_from.stream_index
        result.resumed_at = len(resume_from.images)
        result.images = list(resume_from.images)
        result.skipped = list(resume_from.skipped)
        result.segment_end_weights = list(resume_from.segment_end_weights)
    show = progress and sys.stderr.isatty()
    current_segment = len(result.segment_end_weights)
    for stream_index in tqdm(range(start, len(stream)), desc=result.label, unit="image", disable=not show):
        segment_index, sample = stream[stream_index]
        while current_segment < segment_index:  # segments may be empty
            result.segment_end_weights.append(_weights(working))
            current_segment += 1
        if _skip_unclickable(sample, result):
            continue
        events_before = len(monitor.events) if monitor is not None else 0
        before = state.snapshot() if monitor is not None and result.fork is None else None
        began = time.perf_counter()
        image = _interact(state, task, sample, budget, user_name, click_seed, click_sigma)
        image.position, image.segment, image.seconds = len(result.images), segment_index, time.perf_counter() - began
        if monitor is not None:
            image.events = [event.to_dict() for event in monitor.events[events_before:]]
            if image.events and before is not None:
                result.fork = StreamFork(
                    stream_index, before, list(result.images), list(result.skipped), list(result.segment_end_weights)
                )
        result.images.append(image)
    while len(result.segment_end_weights) < len(segments):
        result.segment_end_weights.append(_weights(working))
    if monitor is not None and result.fork is None:  # it never acted: an unguarded run is identical to the end
        result.fork = StreamFork(
            len(stream), state.snapshot(), list(result.images), list(result.skipped), list(result.segment_end_weights)
        )
    if monitor is not None:
        result.events = [event.to_dict() for event in monitor.events]
        result.signals = [signals.to_dict() for signals in monitor.signals]
        result.sentinel_checks = list(monitor.sentinel_checks)
        result.rehearsals = monitor.rehearsals
        monitor.detach()
    return result


SOURCE_DOMAIN = "source"
"""Domain key of every source-domain segment in :func:`run_domain_scoped_stream`."""
SHARED_TARGET_DOMAIN = "targets"
"""Domain key of every target segment when the targets share one adapting model."""


def segment_domain(segment: StreamSegment, targets_share_model: bool = False) -> str:
    """The domain key of a segment: ``"source"`` for source-domain segments, else the segment's name
    (``"targets"`` for every target segment when ``targets_share_model``)."""
    if segment.source_domain:
        return SOURCE_DOMAIN
    return SHARED_TARGET_DOMAIN if targets_share_model else segment.name


def run_domain_scoped_stream(
    model: nn.Module,
    task: TaskSpec,
    segments: Sequence[StreamSegment],
    strategy_name: str,
    strategy_overrides: dict[str, Any] | None = None,
    safety: SafetyConfig | None = None,
    *,
    label: str | None = None,
    user_name: str = "oaims",
    budget: int = 10,
    click_seed: int = 0,
    order_seed: int | None = 0,
    click_sigma: float = DEFAULT_CLICK_SIGMA,
    device: str = "cpu",
    sentinel_images: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    rehearsal_images: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    targets_share_model: bool = False,
    source_mode: SourceMode = "frozen",
    progress: bool = True,
) -> LongStreamResult:
    """Process a long stream with :class:`~clickadapt.adaptation.domains.DomainScopedModels`.

    Each image is segmented by the model of its segment's domain (:func:`segment_domain`: the image's
    metadata is taken to say where it comes from); source-domain segments are served by the source model,
    frozen or with per-image Mid-Interaction updates that are undone after the image (``source_mode``).
    With ``targets_share_model`` all target segments adapt one model in turn (what is learnt on one target
    domain carries over to the next) and only the source domain is kept apart.

    Arguments and result as :func:`run_long_stream`, except that :attr:`LongStreamResult.segment_end_weights`
    holds the weights that serve *source-domain* images at each segment's end (what the forgetting measure
    asks about) and :attr:`LongStreamResult.domain_end_weights` those of every adapted domain at the end.
    """
    _check_stream_inputs(task, segments, budget, user_name, click_seed)
    models = DomainScopedModels(
        model,
        task,
        strategy_name,
        strategy_overrides,
        source_domains={SOURCE_DOMAIN},
        safety=safety,
        device=device,
        sentinel_images=sentinel_images,
        rehearsal_images=rehearsal_images,
        source_mode=source_mode,
        click_sigma=click_sigma,
    )
    source_model = models.source_model
    result = LongStreamResult(
        label=label or f"{strategy_name}+domains" + ("+episodic-source" if source_mode == "episodic" else ""),
        strategy=strategy_name,
        overrides=dict(strategy_overrides or {}),
        safety=safety.model_dump() if safety is not None else None,
        task=task.name,
        regions=list(task.regions),
        segments=[segment.name for segment in segments],
        budget=budget,
        final_model=source_model,
    )
    stream = ordered_stream(segments, order_seed)
    show = progress and sys.stderr.isatty()
    for segment_index, sample in tqdm(stream, desc=result.label, unit="image", disable=not show):
        while len(result.segment_end_weights) < segment_index:
            result.segment_end_weights.append(_weights(source_model))
        if _skip_unclickable(sample, result):
            continue
        domain = segment_domain(segments[segment_index], targets_share_model)
        state, monitor = models.state(domain, sample.key), models.monitor(domain, sample.key)
        events_before = len(monitor.events) if monitor is not None else 0
        began = time.perf_counter()
        image = _interact(state, task, sample, budget, user_name, click_seed, click_sigma)
        image.position, image.segment, image.seconds = len(result.images), segment_index, time.perf_counter() - began
        if monitor is not None:
            image.events = [{**event.to_dict(), "domain": domain} for event in monitor.events[events_before:]]
            result.events.extend(image.events)
            result.signals.append(monitor.signals[-1].to_dict())
        result.images.append(image)
    while len(result.segment_end_weights) < len(segments):
        result.segment_end_weights.append(_weights(source_model))
    result.domain_end_weights = {
        domain: _weights(models.state(domain).model) for domain in models.domains if not models.is_source(domain)
    }
    for monitor in models.monitors().values():  # the adapting domains (episodic copies have no sentinel)
        result.sentinel_checks.extend(monitor.sentinel_checks)
        result.rehearsals += monitor.rehearsals
    models.detach()
    return result


def _check_stream_inputs(
    task: TaskSpec, segments: Sequence[StreamSegment], budget: int, user_name: str, click_seed: int
) -> None:
    """Refuse a budget below 1, a sample of another task or an unknown user before any work."""
    if budget < 1:
        raise ValueError(f"budget must be at least 1 click, got {budget}")
    for segment in segments:
        for sample in segment.samples:
            if sample.task != task.name:
                raise ValueError(f"sample {sample.key} is a {sample.task!r} image but the model is for {task.name!r}")
    make_simulated_user(user_name, click_seed)  # validates the name


def _skip_unclickable(sample: Sample, result: LongStreamResult) -> bool:
    """Record and report a sample whose label has no foreground (nothing for the simulated user to click)."""
    if np.any(sample.label > 0):
        return False
    logger.warning("skipping %s: its label has no foreground for the simulated user to click", sample.key)
    result.skipped.append(sample.key)
    return True


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _interact(
    state: ModelState,
    task: TaskSpec,
    sample: Sample,
    budget: int,
    user_name: str,
    click_seed: int,
    click_sigma: float,
) -> LongStreamImage:
    """One image: clicks until the budget or a perfect mask, then ``session.finish()`` (which reaches the model's
    safety layer and episodic reset, its finish listeners); the model version is read after it."""
    user = make_simulated_user(user_name, user_seed(click_seed, sample.key))
    session = InteractiveSession(state, click_sigma=click_sigma, undo_depth=0)  # a simulated user never undoes
    curves = click_through(session, sample, user, budget, task)
    session.finish()
    return LongStreamImage(
        position=-1,
        segment=-1,
        key=sample.key,
        clicks=len(session.clicks),
        dice=curves,
        version_first=int(session.versions[0]),
        version_after=int(state.version),
        seconds=0.0,
    )


def evaluate_weights(
    model: nn.Module,
    weights: dict[str, torch.Tensor] | None,
    task: TaskSpec,
    samples: Sequence[Sample],
    *,
    user_name: str = "oaims",
    budget: int = 10,
    click_seed: int = 0,
    click_sigma: float = DEFAULT_CLICK_SIGMA,
    device: str = "cpu",
) -> np.ndarray:
    """Dice of a model kept frozen, per image and click: ``(images, budget)`` mean-over-regions values.

    Args:
        model: The architecture (and weights when ``weights`` is ``None``); copied, never changed.
        weights: A state dict to load into the copy first (e.g. a segment's end weights).
        task: The task.
        samples: The images, in the order given.
        user_name: Simulated user.
        budget: Clicks per image.
        click_seed: Seed of the user (combined with each key, as in the stream).
        click_sigma: σ of the click maps.
        device: Torch device.
    """
    network = copy.deepcopy(model)
    if weights is not None:
        network.load_state_dict(weights)
    result = run_long_stream(
        network,
        task,
        [StreamSegment("evaluation", list(samples))],
        "frozen",
        user_name=user_name,
        budget=budget,
        click_seed=click_seed,
        order_seed=None,
        click_sigma=click_sigma,
        device=device,
        progress=False,
    )
    return np.asarray(
        [[image.mean_dice(click) for click in range(1, budget + 1)] for image in result.images], dtype=np.float64
    ).reshape(-1, budget)
