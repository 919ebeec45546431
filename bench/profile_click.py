"""Where a click's time goes in the stream engine: simulated user, click maps, forward, backward, bookkeeping.

Runs ``run_stream`` on a few built-in demo brain slices (or, with ``--task fundus``, the latency benchmark's
RIM-ONE r1 test photographs from the shared data) under :mod:`cProfile` and attributes the inclusive time
of a few functions to the categories of issue 15. Reproduce::

    .venv/bin/python -m bench.profile_click --strategy oaims --images 4 --budget 5
    .venv/bin/python -m bench.profile_click --task fundus --strategy oaims --images 4 --budget 10

Numbers are CPU-dependent; run on an idle machine (one torch thread, like a bench worker).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch

from bench.speed.settings import STREAMS
from clickadapt.data.demo import load_demo_samples
from clickadapt.data.registry import load_samples
from clickadapt.evaluation.command import load_model
from clickadapt.evaluation.stream import run_stream

CATEGORIES: dict[str, tuple[str, ...]] = {
    "simulated user": ("simulators.py:first_click", "simulators.py:next_click"),
    "click maps": ("encoding.py:model_input",),
    "forward (network)": ("module.py:_call_impl",),
    "backward": ("graph.py:_engine_run_backward",),
    "optimizer step": ("optimizer.py:wrapper",),
    "Dice (metric)": ("metrics.py:region_dice",),
}


def _inclusive(stats: pstats.Stats, suffix: str) -> float:
    total = 0.0
    for (filename, _, name), (_, _, _, cumulative, callers) in stats.stats.items():  # type: ignore[attr-defined]
        key = f"{filename.rsplit('/', 1)[-1]}:{name}"
        if key == suffix:
            # Only outermost calls: skip calls made from inside another call of the same function.
            nested = any(f"{c[0].rsplit('/', 1)[-1]}:{c[2]}" == suffix for c in callers)
            total += 0.0 if nested else cumulative
    return total


def main() -> None:
    """Profile one run and print seconds per click by category."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["brain", "fundus"], default="brain")
    parser.add_argument("--strategy", default="oaims")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--budget", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.task)
    if args.task == "fundus":
        samples = load_samples(STREAMS["fundus"])[: args.images]
    else:
        samples = load_demo_samples()[: args.images]
    sigma = loaded.meta.preprocessing.click_sigma  # the click maps the model was trained with
    # warm-up
    run_stream(loaded.model, loaded.task, samples[:1], args.strategy, budget=2, progress=False, click_sigma=sigma)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    result = run_stream(
        loaded.model, loaded.task, samples, args.strategy, budget=args.budget, progress=False, click_sigma=sigma
    )
    profiler.disable()
    wall = time.perf_counter() - start
    clicks = sum(len(image.clicks) for image in result.images)
    stats = pstats.Stats(profiler)
    print(f"{args.strategy}: {len(result.images)} images, {clicks} clicks, {wall:.2f} s (profiled)")
    accounted = 0.0
    for category, functions in CATEGORIES.items():
        seconds = sum(_inclusive(stats, function) for function in functions)
        accounted += seconds
        print(f"  {category:<20} {1000 * seconds / clicks:8.1f} ms/click  {100 * seconds / wall:5.1f} %")
    rest = wall - accounted
    print(f"  {'bookkeeping (rest)':<20} {1000 * rest / clicks:8.1f} ms/click  {100 * rest / wall:5.1f} %")


if __name__ == "__main__":
    main()
