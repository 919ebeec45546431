"""Where the brain model's Dice@10 is lost: at the expert outline, or away from it? (issue 13)

For the shipped brain checkpoint, the ``oaims`` simulated user (10 clicks, no adaptation, 3 click
seeds) on the study's brain sets (``bench/models.py``: the 15 validation patients and HT FLAIR), each
image's mask after the last click is compared with the expert mask:

- **error pixels by distance to the expert outline**: false positives (outside the lesion) and false
  negatives (inside) within ``BAND`` pixels of the lesion's border, and farther away;
- **pixels in predicted regions no positive click touched** (what a "keep only the regions I
  clicked" filter would remove) and how many of them are false positives;
- **the Dice with those regions removed** after the last click (the user's clicks were placed on the
  unfiltered masks);
- **normalised surface Dice** (MONAI ``compute_surface_dice``) at 1 and 2 px of tolerance;
- **Dice with the border band forgiven**: the Dice after every error within ``BAND`` px of the
  outline is set right; what stays missing is what the far errors cost;
- **the resolution ceiling**: the expert mask resampled to the network's grid and back
  (area-weighted down as the network's input is, bilinear up as its logits are, threshold 0.5) against
  itself: what a network that drew the expert mask perfectly on its grid would score.

And whether adapting closes the gap on the validation slices: the same user and seeds with the
project's Mid-Interaction update reset before every image (``mid``, episodic), and with OAIMS over the
200 slices as one stream in dataset order (each image finished, so the Post-Interaction update runs).

Usage: ``python bench/brain_errors.py run`` (writes ``bench/results/brain_errors.json``),
``python bench/brain_errors.py adapt`` (adds the adapted runs to it) and ``python bench/brain_errors.py report``
(writes ``bench/results/brain_errors.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_surface_dice
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import make_strategy
from clickadapt.clicks.click import Click
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.data.registry import load_samples
from clickadapt.evaluation.machine import cpu_and_versions
from clickadapt.evaluation.stream import click_through, image_click_seed
from clickadapt.models.checkpoint import load_checkpoint
from models import BRAIN_V2, CACHE, EVALUATION_SETS

RESULTS = Path("bench/results/brain_errors.json")
REPORT = Path("bench/results/brain_errors.md")
SETS = ("validation, all slices", "HT FLAIR, all slices")
SEEDS = (0, 1, 2)
BUDGET = 10
BAND = 2.0
COUNTS = ("fp_near", "fp_far", "fn_near", "fn_far", "unclicked", "unclicked_fp")


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (1 when both are empty)."""
    total = int(prediction.sum() + truth.sum())
    return 1.0 if total == 0 else 2.0 * float((prediction & truth).sum()) / total


def error_parts(prediction: np.ndarray, truth: np.ndarray, clicks: list[Click], band: float = BAND) -> dict[str, Any]:
    """Error pixels of one mask split by distance to the expert outline, and the band-forgiven Dice.

    Args:
        prediction: Boolean predicted lesion mask.
        truth: Boolean expert lesion mask.
        clicks: The user's clicks (those with a label above 0 are positive).
        band: Distance (pixels) from the outline within which an error counts as "near".
    """
    outside = ndimage.distance_transform_edt(~truth)  # distance of a background pixel to the lesion
    inside = ndimage.distance_transform_edt(truth)  # distance of a lesion pixel to the background
    false_positive, false_negative = prediction & ~truth, truth & ~prediction
    near_fp, near_fn = false_positive & (outside <= band), false_negative & (inside <= band)
    regions, count = ndimage.label(prediction)
    clicked = {int(regions[c.row, c.col]) for c in clicks if c.label > 0}
    unclicked = np.isin(regions, [index for index in range(1, count + 1) if index not in clicked])
    forgiven = (prediction & ~near_fp) | near_fn
    kept = prediction & ~unclicked
    return {
        "fp_near": int(near_fp.sum()),
        "fp_far": int((false_positive & ~near_fp).sum()),
        "fn_near": int(near_fn.sum()),
        "fn_far": int((false_negative & ~near_fn).sum()),
        "unclicked": int(unclicked.sum()),
        "unclicked_fp": int((unclicked & ~truth).sum()),
        "dice": dice(prediction, truth),
        "dice_band_forgiven": dice(forgiven, truth),
        "dice_clicked_regions": dice(kept, truth),
    }


def surface_dice(prediction: np.ndarray, truth: np.ndarray, tolerance: float) -> float:
    """MONAI's normalised surface Dice of two boolean masks at ``tolerance`` pixels."""
    predicted, expert = (torch.as_tensor(np.stack([~m, m])[None], dtype=torch.float32) for m in (prediction, truth))
    with warnings.catch_warnings():  # MONAI 1.5 warns about an argument it passes to itself
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        value = compute_surface_dice(predicted, expert, class_thresholds=[tolerance], include_background=False)
    result = float(value.item())
    return 1.0 if np.isnan(result) else result


def resolution_ceiling(truth: np.ndarray, grid: int) -> float:
    """Dice of the expert mask against itself after a round trip through a ``grid``-pixel network grid."""
    mask = torch.as_tensor(truth, dtype=torch.float32)[None, None]
    small = torch.nn.functional.interpolate(mask, size=(grid, grid), mode="bilinear", antialias=True)
    back = torch.nn.functional.interpolate(small, size=truth.shape, mode="bilinear", align_corners=False)
    return dice(back[0, 0].numpy() >= 0.5, truth)


def run() -> dict[str, Any]:
    """Measure every set and seed; returns the JSON record."""
    torch.set_num_threads(2)
    loaded = load_checkpoint(BRAIN_V2)
    sigma = loaded.meta.preprocessing.click_sigma
    grid = loaded.meta.model.input_size
    state = ModelState(loaded.model, loaded.task, make_strategy("frozen", loaded.task), "cpu")
    sets: dict[str, Any] = {}
    for set_name in SETS:
        samples = load_samples(EVALUATION_SETS["brain"][set_name].model_copy(update={"size": 256}), cache_dir=CACHE)
        per_seed = []
        for seed in SEEDS:
            rows = []
            for sample in samples:
                session = InteractiveSession(state, click_sigma=sigma, undo_depth=0)
                user = make_simulated_user("oaims", image_click_seed(seed, sample.key))
                click_through(session, sample, user, BUDGET, loaded.task)  # the package's click loop
                prediction = session.prediction if session.prediction is not None else np.zeros_like(sample.label)
                truth, mask = sample.label > 0, prediction > 0
                row = error_parts(mask, truth, list(session.clicks))
                row["nsd@1"] = surface_dice(mask, truth, 1.0)
                row["nsd@2"] = surface_dice(mask, truth, 2.0)
                rows.append(row)
            per_seed.append(rows)
        ceiling = [resolution_ceiling(s.label > 0, grid) for s in samples] if grid else []
        sets[set_name] = {
            "images": len(samples),
            "patients": len({s.patient for s in samples}),
            "per_seed": [
                {
                    **{key: int(sum(row[key] for row in rows)) for key in COUNTS},
                    **{
                        key: 100 * float(np.mean([row[key] for row in rows]))
                        for key in ("dice", "dice_band_forgiven", "dice_clicked_regions", "nsd@1", "nsd@2")
                    },
                }
                for rows in per_seed
            ],
            "resolution_ceiling": 100 * float(np.mean(ceiling)) if ceiling else None,
        }
        print(set_name, sets[set_name]["per_seed"], flush=True)
    return {
        "checkpoint": str(BRAIN_V2),
        "sha256": loaded.sha256,
        "network_grid": grid,
        "band_px": BAND,
        "seeds": list(SEEDS),
        "sets": sets,
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": cpu_and_versions(),
        "command": "python bench/brain_errors.py run",
    }


def adapted(strategy: str, set_name: str = SETS[0]) -> dict[str, Any]:
    """Dice@1/5/10 per click seed with ``strategy`` adapting (``mid`` reset before every image, ``oaims`` a stream)."""
    torch.set_num_threads(2)
    loaded = load_checkpoint(BRAIN_V2)
    samples = load_samples(EVALUATION_SETS["brain"][set_name].model_copy(update={"size": 256}), cache_dir=CACHE)
    state = ModelState(loaded.model, loaded.task, make_strategy(strategy, loaded.task), "cpu")
    start = state.snapshot()
    per_seed = []
    for seed in SEEDS:
        state.restore(start)
        curves = []
        for sample in samples:
            if strategy == "mid":
                state.restore(start)  # episodic: what one image's clicks do, nothing carried over
            session = InteractiveSession(state, click_sigma=loaded.meta.preprocessing.click_sigma, undo_depth=0)
            user = make_simulated_user("oaims", image_click_seed(seed, sample.key))
            curves.append(click_through(session, sample, user, BUDGET, loaded.task)["lesion"])
            if strategy != "mid":
                session.finish()
        per_seed.append({f"dice@{k}": 100 * float(np.mean([curve[k - 1] for curve in curves])) for k in (1, 5, 10)})
        print(strategy, seed, per_seed[-1], flush=True)
    return {"set": set_name, "images": len(samples), "per_seed": per_seed}


def _mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def report(record: dict[str, Any]) -> str:
    """The Markdown table of ``bench/results/brain_errors.md``."""
    band = record["band_px"]
    machine = record["machine"]
    lines = [
        "# Where the brain model's Dice@10 is lost (issue 13)",
        "",
        f"Generated by `python bench/brain_errors.py report` from `{RESULTS}`; measured by `{record['command']}`",
        f"on {record['measured']} ({machine['cpu']}, {machine['cpus']} CPUs, torch {machine['torch']}).",
        f"Checkpoint `{record['checkpoint']}` (sha256 {record['sha256'][:12]}…,",
        f"network grid {record['network_grid']} px on 256 px slices), `oaims` simulated user,",
        f"{BUDGET} clicks, no adaptation; mean ± sd over click seeds {record['seeds']} of the mean over images. Error",
        f"pixels summed over images, averaged over the seeds; *near* = within {band:g} px of the expert outline.",
        "",
        "| set | images | patients | Dice@10 | NSD 1 px | NSD 2 px | Dice, near errors forgiven | errors near outline |"
        " far FP | far FN | in unclicked regions (of them FP) | Dice, unclicked regions removed |"
        " expert mask through the grid |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for set_name, entry in record["sets"].items():
        seeds = entry["per_seed"]
        counts = {key: float(np.mean([seed[key] for seed in seeds])) for key in COUNTS}
        errors = counts["fp_near"] + counts["fp_far"] + counts["fn_near"] + counts["fn_far"]
        near = counts["fp_near"] + counts["fn_near"]
        ceiling = entry["resolution_ceiling"]
        cells = [
            set_name,
            str(entry["images"]),
            str(entry["patients"]),
            *(_mean_sd([seed[key] for seed in seeds]) for key in ("dice", "nsd@1", "nsd@2", "dice_band_forgiven")),
            f"{100 * near / errors:.0f} % of {errors:.0f} px",
            f"{100 * counts['fp_far'] / errors:.0f} %",
            f"{100 * counts['fn_far'] / errors:.0f} %",
            f"{counts['unclicked']:.0f} px ({100 * counts['unclicked_fp'] / max(counts['unclicked'], 1):.0f} %)",
            _mean_sd([seed["dice_clicked_regions"] for seed in seeds]),
            "–" if ceiling is None else f"{ceiling:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    runs = record.get("adapted", {})
    if runs:
        lines += [
            "",
            "Adapting, same user, seeds and 10 clicks (`python bench/brain_errors.py adapt`): `mid` = the",
            "Mid-Interaction update reset before every image; `oaims` = OAIMS over the slices as one stream in dataset",
            "order.",
            "",
            "| strategy | set | images | Dice@1 | Dice@5 | Dice@10 |",
            "|---|---|---|---|---|---|",
        ]
        for strategy, run in runs.items():
            cells = [_mean_sd([seed[f"dice@{k}"] for seed in run["per_seed"]]) for k in (1, 5, 10)]
            lines.append(f"| {strategy} | {run['set']} | {run['images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "adapt", "report"])
    args = parser.parse_args(argv)
    if args.command == "run":
        earlier = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        kept = {key: earlier[key] for key in ("adapted", "adapted_measured") if key in earlier}  # `adapt`'s runs
        RESULTS.write_text(json.dumps({**run(), **kept}, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    elif args.command == "adapt":
        record = json.loads(RESULTS.read_text())
        record["adapted"] = {strategy: adapted(strategy) for strategy in ("mid", "oaims")}
        record["adapted_measured"] = datetime.now(UTC).isoformat(timespec="seconds")
        RESULTS.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    REPORT.write_text(report(json.loads(RESULTS.read_text())))
    print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
