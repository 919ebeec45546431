"""A stream through :class:`~clickadapt.adaptation.session.InteractiveSession`, every click and finish timed.

Every image goes through the package's one click loop, :func:`clickadapt.evaluation.stream.click_through`
(the loop of ``clickadapt evaluate``, the benchmark and the long streams): a fresh session per image on
one shared adapting :class:`~clickadapt.adaptation.model_state.ModelState`, the simulated user seeded
per image. This module only adds clocks: the click-to-mask wall time of every ``add_click``
(:class:`TimedSession`), the session's own split of each click (``session.timings``: the strategy update
and the undo snapshot) and the wall time of ``finish``.
"""

from __future__ import annotations

import concurrent.futures
import copy
import logging
import multiprocessing
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bench.speed.machine import current_rss_mb, peak_rss_mb
from bench.speed.network import build_network, synchronise
from bench.speed.results import RunResult, mean_dice_curves
from bench.speed.settings import RunSpec
from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import make_strategy
from clickadapt.clicks.click import Click
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.data.sample import Sample
from clickadapt.evaluation.stream import click_through, image_click_seed, seeded_overrides
from clickadapt.models.factory import count_parameters
from clickadapt.tasks import TaskSpec, get_task

logger = logging.getLogger(__name__)

WARM_UP_BUDGET = 3
"""Clicks of the untimed warm-up image (at most the run's budget)."""


class TimedSession(InteractiveSession):
    """An :class:`~clickadapt.adaptation.session.InteractiveSession` that also times each ``add_click`` whole.

    ``session.timings`` splits a click into the displayed forward, the strategy's update and the undo
    snapshot; their sum (``total_s``) leaves out the argmax and the copy of the mask to the host, and on a
    GPU the forward's clock stops when its kernels are queued, not done. What a person waits, click → mask
    on screen, is the wall clock around the whole ``add_click``, which returns the mask as a host array:
    :attr:`click_wall_s`, one entry per click made.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.click_wall_s: list[float] = []

    def add_click(self, click: Click) -> np.ndarray:
        """:meth:`InteractiveSession.add_click`, its wall-clock time appended to :attr:`click_wall_s`."""
        start = time.perf_counter()
        prediction = super().add_click(click)
        self.click_wall_s.append(time.perf_counter() - start)
        return prediction


def time_image(
    session: TimedSession, sample: Sample, spec: RunSpec, task: TaskSpec, result: RunResult | None
) -> dict[str, list[float]]:
    """One image through the engine's click loop, then a timed ``finish``; the timings go into ``result``.

    Args:
        session: A fresh session on the shared model state.
        sample: The image and its reference label (read only by the simulated user and the Dice).
        spec: The run (budget, user, seed, device).
        task: Its task.
        result: Where the click and finish times go; ``None`` for an untimed warm-up.

    Returns:
        Per region, the Dice after clicks 1..budget (the last value repeated after an early stop).
    """
    user = make_simulated_user(spec.user, image_click_seed(spec.seed, sample.key))
    curves = click_through(session, sample, user, spec.budget, task)
    start = time.perf_counter()
    session.finish()
    synchronise(spec.device)
    finish_s = time.perf_counter() - start
    if result is not None:
        record_image(result, session, finish_s)
    return curves


def record_image(result: RunResult, session: TimedSession, finish_s: float) -> None:
    """Add one finished image's times to ``result``.

    Every click's click-to-mask time (the first click apart from clicks 2..T), for clicks 2..T the update
    and the snapshot as the session timed them, and the finish.

    Raises:
        ValueError: If the session's wall clocks and its own timings do not cover the same clicks.
    """
    timings = session.timings
    if len(session.click_wall_s) != len(timings):
        raise ValueError(f"{len(session.click_wall_s)} timed clicks but the session recorded {len(timings)}")
    result.click_s.extend(session.click_wall_s)
    result.first_click_s.extend(session.click_wall_s[:1])
    result.later_click_s.extend(session.click_wall_s[1:])
    result.update_s.extend(timing.update_s for timing in timings[1:])
    result.snapshot_s.extend(timing.snapshot_s for timing in timings[1:])
    result.finish_s.append(finish_s)


def measure_stream(spec: RunSpec, samples: Sequence[Sample]) -> RunResult:
    """Drive sessions over ``samples`` with a simulated user and time every click and finish.

    One warm-up image (on a copy of the network, not counted) comes first, so that one-off costs
    (allocator, kernel selection) are not charged to the stream.

    Args:
        spec: What to measure.
        samples: The stream, in stream order (each label with foreground for the simulated user).

    Returns:
        The timings, Dice and memory of the run.
    """
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    task = get_task(spec.task)
    network, click_sigma, trained = build_network(spec, task)
    overrides = seeded_overrides(spec.strategy, {}, spec.seed)
    warm_state = ModelState(copy.deepcopy(network), task, make_strategy(spec.strategy, task, **overrides), spec.device)
    time_image(
        TimedSession(warm_state, click_sigma=click_sigma, undo_depth=spec.undo_depth),
        samples[0],
        spec.replace(budget=min(spec.budget, WARM_UP_BUDGET)),
        task,
        None,
    )
    del warm_state
    if spec.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(spec.device))
    state = ModelState(network, task, make_strategy(spec.strategy, task, **overrides), spec.device)
    result = RunResult(
        spec=spec,
        images=len(samples),
        size=int(samples[0].image.shape[-1]),
        parameters=count_parameters(network),
        trained=trained,
        threads=torch.get_num_threads(),
        baseline_rss_mb=current_rss_mb(),
    )
    curves = []
    for sample in samples:
        session = TimedSession(
            state,
            click_sigma=click_sigma,
            undo_depth=spec.undo_depth,
            reuse_displayed_forward=spec.reuse_displayed_forward,
        )
        curves.append(time_image(session, sample, spec, task, result))
    result.dice = mean_dice_curves(curves, task.regions)
    result.peak_rss_mb = peak_rss_mb()
    if spec.device.startswith("cuda"):
        result.gpu_peak_mb = torch.cuda.max_memory_allocated(torch.device(spec.device)) / 2**20
    return result


def run_measurement(spec: RunSpec, samples: Sequence[Sample], isolate: bool) -> RunResult:
    """:func:`measure_stream`, in a fresh process when ``isolate`` (so the peak memory is this run's own)."""
    logger.info("measuring %s / %s / %s on %d images", spec.task, spec.strategy, spec.label, len(samples))
    if not isolate:
        return measure_stream(spec, samples)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measure_stream, spec, list(samples)).result()
