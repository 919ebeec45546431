"""Why the web page has a crop tool: the fundus model on whole photographs vs on crops around the optic disc.

The shipped fundus model learnt from RIM-ONE crops in which the disc fills about two thirds of the side. A
user's photograph is stretched onto the model's grid as it is; this measures what that costs on Drishti-GS1's
test images as shared (1024-px pictures, disc at a median 38 % of the side) against the benchmark's crops of
the same images around the disc centre (``disc_crop_fraction`` 0.6, disc at about 64 %): the frozen shipped
model, ``oaims`` simulated user, 10 clicks, click seeds 0-2, Dice (%) after clicks 1 / 5 / 10, mean ± sd over
the seeds of the mean over the images, and the paired difference (crop − whole, same image and click seed)
with its 95 % bootstrap interval over images.

Writes ``bench/results/crop_scale.md``. Reproduce::

    .venv/bin/python bench/crop_scale.py
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

from clickadapt.data.registry import DatasetConfig, load_samples
from clickadapt.evaluation.statistics import paired_difference
from clickadapt.evaluation.stream import FROZEN_STRATEGY, run_stream
from clickadapt.models.checkpoint import load_checkpoint

if __package__ in (None, ""):  # run as a script: make the repository root importable for `bench.harness`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.study import write_study_page

OUTPUT = Path("bench/results/crop_scale.md")
SEEDS = (0, 1, 2)
FRACTIONS = {"as shared (whole 1024-px picture)": 1.0, "crop around the disc (0.6 of the side)": 0.6}


def main() -> int:
    torch.set_num_threads(1)
    loaded = load_checkpoint("src/clickadapt/pretrained/fundus.pt")
    sigma = loaded.meta.preprocessing.click_sigma
    rows = []
    images = 0
    per_image: dict[str, dict[str, dict[tuple[str, int], list[float]]]] = {}  # input → region → (key, seed)
    for name, fraction in FRACTIONS.items():
        config = DatasetConfig(reader="drishti-gs1", split="test", size=256, disc_crop_fraction=fraction)
        samples = load_samples(config, cache_dir=Path(".cache/clickadapt"))
        images = len(samples)
        per_seed: dict[str, list[list[float]]] = {}
        for seed in SEEDS:
            result = run_stream(
                loaded.model, loaded.task, samples, FROZEN_STRATEGY, {}, "oaims", 10,
                order_seed=None, click_seed=seed, progress=False, click_sigma=sigma,
            )  # fmt: skip
            for region in result.regions:
                curves = [record.dice[region] for record in result.images]
                per_seed.setdefault(region, []).append(
                    [100 * statistics.mean(curve[k - 1] for curve in curves) for k in (1, 5, 10)]
                )
                for record in result.images:
                    per_image.setdefault(name, {}).setdefault(region, {})[(record.key, seed)] = [record.dice[region][9]]
        for region, values in per_seed.items():
            cells = [
                f"{statistics.mean(v[i] for v in values):.1f} ± {statistics.stdev(v[i] for v in values):.1f}"
                for i in range(3)
            ]
            rows.append(f"| {name} | {region} | {' | '.join(cells)} |")
            print(rows[-1], flush=True)
    whole, crop = (per_image[name] for name in FRACTIONS)
    differences = []
    for region in crop:
        interval = paired_difference(crop[region], whole[region]).scaled(100)
        differences.append(
            f"- {region}: crop − whole at click 10 {interval.mean:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}] "
            f"(n = {interval.n} images, 3 click seeds)"
        )
        print(differences[-1], flush=True)
    write_study_page(
        OUTPUT,
        "The fundus model on whole photographs vs on crops around the optic disc",
        __doc__,
        "python bench/crop_scale.py",
        f"Images: Drishti-GS1 test split, n = {images} (the same images in both rows); model "
        "`src/clickadapt/pretrained/fundus.pt`, no adaptation",
        ["| input | region | Dice@1 | Dice@5 | Dice@10 |", "|---|---|---|---|---|", *rows],
        differences,
        machine_note="1 torch thread; load beside the benchmark workers: compare Dice, not time",
        closing=[
            "In the web page, the crop tool (key K: drag a box around the disc) makes the second kind of input "
            "from the first; masks are exported in the whole picture's frame."
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
