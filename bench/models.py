"""The source-model study: accuracy, speed and cost of candidate source models, into bench/results/models.md.

Each candidate is a checkpoint written by ``clickadapt train CONFIG``. For every one this measures,
with no adaptation (the model as shipped):

- Dice after clicks 1 / 5 / 10 of the ``oaims`` simulated user on the task's evaluation sets, for
  3 click seeds (mean ± sd over the seeds of the mean over images), with n images and n patients;
- milliseconds per forward pass and per click of an interactive session (frozen click → mask, OAIMS
  Mid-Interaction click, OAIMS Post-Interaction finish), medians on this CPU with 2 torch threads;
- parameters, and the training wall time summed from the run's ``train_log.jsonl``.

Evaluation sets (none of their patients or images is trained on; none is used for model selection):

- brain: the validation patients of ``configs/train_brain.yaml`` (every fifth LGG patient of sites
  CS/DU/EZ/FG by case id: all lesion slices with ≥ 30 lesion pixels, and the largest-lesion slice per
  patient, the paper's protocol); LGG site HT FLAIR (another site, same sequence), both ways. The
  model is *selected* on the validation patients' all-slices Dice@5, so that row is optimistic by the
  selection; HT is untouched.
- fundus: all 84 ``r2_`` images of RIM-ONE DL's official test split (model selection used every sixth
  ``r2_`` *train* image).

Usage::

    python bench/models.py evaluate NAME CHECKPOINT [--train-log runs/x/train_log.jsonl ...] [--note TEXT]
    python bench/models.py report          # bench/results/models.md from bench/results/models/*.json
    python bench/models.py compare CANDIDATE.pt REFERENCE.pt   # paired per image, bootstrap intervals
    python bench/models.py speed CHECKPOINT --size 384         # its network's speed at another data size
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import make_strategy
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.data.registry import DatasetConfig, PatientFold, load_samples
from clickadapt.data.sample import Sample
from clickadapt.evaluation.machine import cpu_and_versions
from clickadapt.evaluation.statistics import Interval, bootstrap_mean
from clickadapt.evaluation.stream import FROZEN_STRATEGY, click_through, evaluate_frozen, image_click_seed, run_stream
from clickadapt.models.checkpoint import LoadedModel, load_checkpoint
from clickadapt.models.factory import count_parameters

RESULTS = Path("bench/results/models")
REPORT = Path("bench/results/models.md")
CLICK_SEEDS = (0, 1, 2)
THREADS = 2
CACHE = Path(".cache/clickadapt")
BRAIN_V2 = Path("bench/models/brain_v2.pt")
"""The brain model shipped 2026-12-01 to 2026-12-04 (σ 5): the brain studies and the benchmark were measured with it."""

_LGG_VALIDATION = {"domains": ["CS", "DU", "EZ", "FG"], "patient_fold": PatientFold(every=5, offset=0, keep="fold")}
EVALUATION_SETS: dict[str, dict[str, DatasetConfig]] = {
    "brain": {
        "validation, all slices": DatasetConfig(
            reader="lgg", modality="FLAIR", slice_policy="all", min_lesion_pixels=30, **_LGG_VALIDATION
        ),
        "validation, largest slice": DatasetConfig(
            reader="lgg", modality="FLAIR", slice_policy="largest", **_LGG_VALIDATION
        ),
        "HT FLAIR, all slices": DatasetConfig(
            reader="lgg", modality="FLAIR", domains=["HT"], slice_policy="all", min_lesion_pixels=30
        ),
        "HT FLAIR, largest slice": DatasetConfig(
            reader="lgg", modality="FLAIR", domains=["HT"], slice_policy="largest"
        ),
    },
    "fundus": {
        "RIM-ONE r2 test": DatasetConfig(reader="rimone-dl", split="test", domains=["r2"]),
    },
}
"""Per task, the named evaluation sets (the image size is taken from each checkpoint)."""


def _checkpoint_size(loaded: LoadedModel) -> int:
    return loaded.meta.preprocessing.image_size(loaded.task.name)


def accuracy(loaded: LoadedModel, samples: list[Sample]) -> dict[str, dict[str, list[float]]]:
    """Per region, Dice@1/5/10 for each click seed (mean over the samples)."""
    per_seed: dict[str, dict[str, list[float]]] = {}
    for seed in CLICK_SEEDS:
        curves = evaluate_frozen(
            loaded.model, loaded.task, samples, "oaims", 10, seed, click_sigma=loaded.meta.preprocessing.click_sigma
        )
        for region, curve in curves.items():
            for click in (1, 5, 10):
                per_seed.setdefault(region, {}).setdefault(f"dice@{click}", []).append(100 * float(curve[click - 1]))
    return per_seed


def speed(loaded: LoadedModel, samples: list[Sample], images: int = 6) -> dict[str, float]:
    """Median ms of a forward pass, a frozen click, an OAIMS Mid-Interaction click and an OAIMS finish."""
    torch.set_num_threads(THREADS)
    sample = samples[0]
    inputs = torch.zeros((1, loaded.task.input_channels, *sample.label.shape))
    inputs[:, : sample.image.shape[0]] = torch.as_tensor(sample.image)
    model = loaded.model.eval()
    with torch.inference_mode():
        for _ in range(3):
            model(inputs)
        forwards = []
        for _ in range(20):
            started = time.perf_counter()
            model(inputs)
            forwards.append(time.perf_counter() - started)
    result = {"forward_ms": 1000 * statistics.median(forwards)}
    for strategy in ("frozen", "oaims"):
        state = ModelState(loaded.model, loaded.task, make_strategy(strategy, loaded.task), "cpu")
        clicks: list[float] = []
        finishes: list[float] = []
        for sample in samples[:images]:
            session = InteractiveSession(state, click_sigma=loaded.meta.preprocessing.click_sigma, undo_depth=0)
            user = make_simulated_user("oaims", image_click_seed(0, sample.key))
            click_through(session, sample, user, 10, loaded.task)
            clicks.extend(timing.total_s for timing in session.timings[1:])
            started = time.perf_counter()
            session.finish()
            finishes.append(time.perf_counter() - started)
        result[f"{strategy}_click_ms"] = 1000 * statistics.median(clicks)
        if strategy == "oaims":
            result["oaims_finish_ms"] = 1000 * statistics.median(finishes)
    return result


def training_seconds(logs: list[Path]) -> float | None:
    """Wall seconds summed over the epochs of ``train_log.jsonl`` files, one per training stage.

    ``None`` without a log; a missing log is an error (a stage's time must not silently vanish).
    """
    if not logs:
        return None
    total = 0.0
    for log in logs:
        if not log.is_file():
            raise FileNotFoundError(f"training log {log} does not exist")
        total += sum(json.loads(line).get("seconds", 0.0) for line in log.read_text().splitlines() if line.strip())
    return float(total)


def evaluate(name: str, checkpoint: Path, train_logs: list[Path], note: str) -> dict[str, Any]:
    """Measure one candidate and write ``bench/results/models/NAME.json``."""
    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    loaded = load_checkpoint(checkpoint)
    size = _checkpoint_size(loaded)
    sets: dict[str, Any] = {}
    first_samples: list[Sample] = []
    for set_name, config in EVALUATION_SETS[loaded.task.name].items():
        samples = load_samples(config.model_copy(update={"size": size}), cache_dir=CACHE)
        first_samples = first_samples or samples
        sets[set_name] = {
            "images": len(samples),
            "patients": len({s.patient for s in samples}),
            "dice": accuracy(loaded, samples),
        }
    record = {
        "name": name,
        "checkpoint": str(checkpoint),
        "sha256": loaded.sha256,
        "task": loaded.task.name,
        "model": loaded.meta.model.model_dump(mode="json"),
        "size": size,
        "parameters": count_parameters(loaded.model),
        "epochs": loaded.meta.training.get("epochs_completed"),
        "training_seconds": training_seconds(train_logs),
        "selection_metrics": loaded.meta.metrics,
        "sets": sets,
        "speed": speed(loaded, first_samples),
        "note": note,
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": cpu_and_versions(),
        "load_average": list(os.getloadavg()),
        "command": " ".join(["python", "bench/models.py", *sys.argv[1:]]),
        "evaluation_seconds": time.perf_counter() - started,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def report() -> str:
    """Compose ``bench/results/models.md`` from every recorded candidate."""
    records = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))]
    lines = [
        "# Source-model study",
        "",
        "Generated by `python bench/models.py report` from `bench/results/models/*.json`; each candidate measured by",
        "`python bench/models.py evaluate NAME CHECKPOINT` (command, date, machine and load in its JSON). Dice in %,",
        f"`oaims` simulated user, no adaptation, mean ± sd over click seeds {list(CLICK_SEEDS)} of the mean over",
        f"images. Speed: medians on the CPU with {THREADS} torch threads at the model's data size; *click* = one",
        "`InteractiveSession.add_click` (clicks 2–10), *finish* = the OAIMS Post-Interaction update. Speed rows",
        "measured while training jobs shared the 2 cores are upper bounds (load average in the JSON: fundus-v2's",
        "speed was measured at load 4 with two other jobs running, fundus-v1's at lower load — not comparable);",
        "`bench/results/latency*.md` have the `bench/latency.py` measurements.",
        "",
    ]
    for task in ("brain", "fundus"):
        rows = [r for r in records if r["task"] == task]
        if not rows:
            continue
        lines += [
            f"## {task}",
            "",
            "| candidate | network | data / network size | params | epochs | train min | forward ms "
            "| frozen click ms | MI click ms | PI finish ms | note |",
            "|" + "---|" * 11,
        ]
        for r in rows:
            model = r["model"]
            network = model["name"] + (f" {model['widths']}" if model["name"] == "reference-unet" else "")
            grid = f"{r['size']} / {model.get('input_size') or r['size']}"
            minutes = f"{r['training_seconds'] / 60:.0f}" if r["training_seconds"] else "–"
            s = r["speed"]
            lines.append(
                f"| {r['name']} | {network} | {grid} | {r['parameters'] / 1e6:.2f} M | {r['epochs']} | {minutes} "
                f"| {s['forward_ms']:.0f} | {s['frozen_click_ms']:.0f} | {s['oaims_click_ms']:.0f} "
                f"| {s['oaims_finish_ms']:.0f} | {r['note']} |"
            )
        lines.append("")
        set_names = list(rows[0]["sets"])
        for set_name in set_names:
            first = rows[0]["sets"][set_name]
            lines += [f"### {set_name} (n = {first['images']} images, {first['patients']} patients)", ""]
            lines += ["| candidate | region | Dice@1 | Dice@5 | Dice@10 |", "|---|---|---|---|---|"]
            for r in rows:
                entry = r["sets"].get(set_name)
                if entry is None:
                    continue
                for region, values in entry["dice"].items():
                    lines.append(
                        f"| {r['name']} | {region} | {_cell(values['dice@1'])} | {_cell(values['dice@5'])} "
                        f"| {_cell(values['dice@10'])} |"
                    )
            lines.append("")
    text = "\n".join(lines)
    REPORT.write_text(text)
    return text


def paired_intervals(differences: dict[str, float], patient_of: dict[str, str]) -> tuple[Interval, Interval]:
    """95 % percentile-bootstrap intervals (seed 0) of a mean per-image difference between two models: over the
    images, and over the patients (each patient's images averaged first, patients in sorted order; an image's
    slices are not independent)."""
    grouped: dict[str, list[float]] = {}
    for key, value in differences.items():
        grouped.setdefault(patient_of[key], []).append(value)
    by_patient = [float(np.mean(grouped[patient])) for patient in sorted(grouped)]
    return bootstrap_mean(np.array(list(differences.values())), seed=0), bootstrap_mean(np.array(by_patient), seed=0)


def interval_text(interval: Interval) -> str:
    """``+1.2 [+0.3, +2.0]``."""
    return f"{interval.mean:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}]"


def per_image_dice(loaded: LoadedModel, set_name: str) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, str]]:
    """Per image key, per region, Dice@1/5/10 (%) averaged over the click seeds, on one evaluation set at the
    checkpoint's own data size (no adaptation, ``oaims`` user); and each image's patient."""
    config = EVALUATION_SETS[loaded.task.name][set_name]
    samples = load_samples(config.model_copy(update={"size": _checkpoint_size(loaded)}), cache_dir=CACHE)
    sums: dict[str, dict[str, dict[str, float]]] = {}
    for seed in CLICK_SEEDS:
        result = run_stream(
            loaded.model, loaded.task, samples, FROZEN_STRATEGY, {}, "oaims", 10, order_seed=None, click_seed=seed,
            click_sigma=loaded.meta.preprocessing.click_sigma,
        )  # fmt: skip
        for image in result.images:
            for region, curve in image.dice.items():
                cell = sums.setdefault(image.key, {}).setdefault(region, {})
                for click in (1, 5, 10):
                    cell[f"dice@{click}"] = cell.get(f"dice@{click}", 0.0) + 100 * curve[click - 1] / len(CLICK_SEEDS)
    return sums, {sample.key: sample.patient for sample in samples}


def compare(candidate: Path, reference: Path) -> str:
    """Markdown: the candidate minus the reference model, image by image on each evaluation set of their task,
    with 95 % percentile-bootstrap intervals over the images and over the patients (:func:`paired_intervals`; each
    model at its own data size)."""
    torch.set_num_threads(THREADS)
    loaded = {path: load_checkpoint(path) for path in (candidate, reference)}
    task = loaded[candidate].task.name
    lines = [f"`{candidate}` − `{reference}` ({task}; oaims user, no adaptation, click seeds {list(CLICK_SEEDS)}):", ""]
    for set_name in EVALUATION_SETS[task]:
        (mine, patient_of), (theirs, _) = (per_image_dice(loaded[path], set_name) for path in (candidate, reference))
        keys = sorted(set(mine) & set(theirs))
        patients = len({patient_of[key] for key in keys})
        for region in loaded[candidate].task.regions:
            over_images, over_patients = [], []
            for click in ("dice@1", "dice@5", "dice@10"):
                differences = {key: mine[key][region][click] - theirs[key][region][click] for key in keys}
                images, grouped = paired_intervals(differences, patient_of)
                over_images.append(interval_text(images))
                over_patients.append(interval_text(grouped))
            lines.append(
                f"- {set_name}, {region}, clicks 1 / 5 / 10: over images (n = {len(keys)}) "
                + " / ".join(over_images)
                + f"; over patients (n = {patients}) "
                + " / ".join(over_patients)
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``evaluate`` one candidate, ``compare`` two, time a network at another size (``speed``), or write the
    ``report``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("evaluate", help="measure one candidate")
    one.add_argument("name")
    one.add_argument("checkpoint", type=Path)
    one.add_argument(
        "--train-log", type=Path, action="append", default=[], help="a stage's train_log.jsonl (repeat per stage)"
    )
    one.add_argument("--note", default="")
    commands.add_parser("report", help="write bench/results/models.md")
    fast = commands.add_parser("speed", help="the speed of a checkpoint's network at another data size")
    fast.add_argument("checkpoint", type=Path)
    fast.add_argument("--size", type=int, required=True, help="side of the data (the network runs at it)")
    pair = commands.add_parser("compare", help="a candidate minus another model, image by image, with intervals")
    pair.add_argument("candidate", type=Path)
    pair.add_argument("reference", type=Path)
    args = parser.parse_args(argv)
    if args.command == "evaluate":
        record = evaluate(args.name, args.checkpoint, args.train_log, args.note)
        print(json.dumps({k: record[k] for k in ("name", "sets", "speed")}, indent=1))
    elif args.command == "compare":
        print(compare(args.candidate, args.reference))
    elif args.command == "speed":  # the cost of a width at a size, before training a candidate there
        loaded = load_checkpoint(args.checkpoint)
        config = next(iter(EVALUATION_SETS[loaded.task.name].values()))
        samples = load_samples(config.model_copy(update={"size": args.size}), cache_dir=CACHE)
        print(json.dumps({"size": args.size, **{k: round(v, 1) for k, v in speed(loaded, samples).items()}}))
    else:
        print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
