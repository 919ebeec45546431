"""Fit the ``--dry-run`` cost table (``COST_PER_CLICK_S`` / ``COST_PER_IMAGE_S`` in
``bench.harness.plan``, one per task) to the CPU seconds recorded in ``bench/cache/runs`` by ``make bench``.

Reproduce: ``python -m bench.fit_cost_table`` (after a ``make bench``; reads the cache only).

Model of one run: ``images × (budget × per_click + per_image)`` plus, for adapting strategies, the forgetting
measurement ``source_images × budget × per_click[frozen]``. Strategies run at several budgets get both terms
fitted; those run at one budget keep the old table's ratio of the two terms (or no per-image term).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bench.harness.plan import COST_PER_IMAGE_S, cost_per_click, estimate_seconds

CACHE = Path(__file__).resolve().parent / "cache" / "runs"
SOURCE_IMAGES = 8  # source_validation_max_images of configs/bench/full.yaml


def main() -> int:
    """Print the fitted table per task and the estimate of the recorded runs with the current and the fitted one."""
    runs = []
    for path in sorted(CACHE.glob("*.json")):
        data = json.loads(path.read_text())
        result = data["result"]
        source = SOURCE_IMAGES if result.get("validation_after") else 0
        runs.append(
            (result["task"], result["strategy_name"], data["budget"], len(result["images"]), source, data["cpu_s"])
        )
    if not runs:
        print(f"no cached runs in {CACHE}; run `make bench` first", file=sys.stderr)
        return 2
    for task in sorted({run[0] for run in runs}):
        fit_task(task, [run[1:] for run in runs if run[0] == task])
    return 0


def fit_task(task: str, runs: list[tuple[str, int, int, int, float]]) -> None:
    """Fit and print one task's table from its runs ``(strategy, budget, images, source images, CPU s)``."""
    frozen = [(budget * images, cpu) for name, budget, images, _, cpu in runs if name == "frozen"]
    old_frozen = cost_per_click(task, "frozen")
    per_click = {
        "frozen": float(np.linalg.lstsq(np.array([[x] for x, _ in frozen]), [y for _, y in frozen])[0][0])
        if frozen
        else old_frozen
    }
    per_image: dict[str, float] = {}
    for name in sorted({run[0] for run in runs} - {"frozen"}):
        own = [run for run in runs if run[0] == name]
        target = np.array([cpu - source * budget * per_click["frozen"] for _, budget, _, source, cpu in own])
        if len({budget for _, budget, *_ in own}) > 1:
            design = np.array([[images * budget, images] for _, budget, images, *_ in own])
            click, image = np.linalg.lstsq(design, target)[0]
            if image < 0:  # no measurable per-image cost: fit the per-click term alone
                design, image = design[:, :1], 0.0
                click = np.linalg.lstsq(design, target)[0][0]
        else:
            old_click = cost_per_click(task, name)
            old_image = COST_PER_IMAGE_S.get(task, {}).get(name, 0.0)
            design = np.array([[images * (budget * old_click + old_image)] for _, budget, images, *_ in own])
            scale = np.linalg.lstsq(design, target)[0][0]
            click, image = old_click * scale, old_image * scale
        per_click[name], per_image[name] = float(click), float(image)
    print(f"{task}:")
    for name in per_click:
        print(f"  {name:12s} per click {per_click[name]:.3f} s   per image {per_image.get(name, 0.0):.3f} s")
    measured = sum(run[4] for run in runs) / 60
    current = sum(estimate_seconds(task, name, images, budget, source) for name, budget, images, source, _ in runs) / 60
    fitted = (
        sum(
            images * (budget * per_click[name] + per_image.get(name, 0.0))
            + (0.0 if name == "frozen" else source * budget * per_click["frozen"])
            for name, budget, images, source, _ in runs
        )
        / 60
    )
    print(f"  {len(runs)} runs: measured {measured:.1f} CPU-min; current table {current:.1f}; fitted {fitted:.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
