"""Clicks per volume with the 2D model on real volumes: slice propagation vs slice by slice, frozen vs adapting.

A simulated user (:mod:`clickadapt.volumes.simulated`, protocol ``oaims-3d``) clicks on whole volumes through a
:class:`~clickadapt.volumes.session.VolumeSession`; the 3D lesion Dice is recorded after each click. Volumes:
the BRATS test patients (T1c and FLAIR) and the MSLUB patients (FLAIR), read as stored; streams per dataset and
modality in patient order, each stream starting from the checkpoint (adapting models carry their weights from
one volume to the next within a stream). To keep the run short, each volume is cropped along its axial axis
to the lesion's slices ± ``--margin``, with the intensity statistics of the whole volume. Reproduce::

    .venv/bin/python bench/volumes.py --model brain --output bench/results/volumes.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

import clickadapt
from clickadapt.data.preprocess import brain_intensity_stats
from clickadapt.paths import default_data_root, resolve_model_spec
from clickadapt.volumes import PropagationConfig, Volume, VolumeOrientation, VolumeSession, read_volume
from clickadapt.volumes.simulated import VolumeUser, simulate_volume

THRESHOLDS = (80, 85)
REPORT_AT = (1, 5, 10)


@dataclass
class Case:
    """One volume: its stream, name, cropped data, ground truth and statistics."""

    stream: str
    name: str
    volume: Volume
    truth: np.ndarray
    brain: np.ndarray | None
    stats_source: tuple[np.ndarray, np.ndarray | None]
    axis: int
    kept: tuple[int, int]


def _axial_axis(volume: Volume) -> int:
    orientation = VolumeOrientation(volume.shape, volume.affine)
    return int(next(d for d in range(3) if orientation.to_slicing[d, 0] == 2))


def _crop(array: np.ndarray, axis: int, lo: int, hi: int) -> np.ndarray:
    return np.ascontiguousarray(np.take(array, np.arange(lo, hi), axis=axis))


def load_case(stream: str, name: str, image: Path, label: Path, brain: Path | None, margin: int) -> Case:
    """Read a volume, its lesion (> 0.5) and brain mask, crop along the axial axis to the lesion ± margin."""
    volume = read_volume(image)
    truth = (read_volume(label).data > 0.5).astype(np.uint8)
    mask = read_volume(brain).data > 0.5 if brain is not None else None
    axis = _axial_axis(volume)
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(truth.sum(axis=other))
    lo, hi = max(0, int(present[0]) - margin), min(volume.shape[axis], int(present[-1]) + 1 + margin)
    offset = np.zeros(3)
    offset[axis] = lo
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, :3] @ offset + volume.affine[:3, 3]
    cropped = Volume(_crop(volume.data, axis, lo, hi), affine, volume.format, None)
    return Case(
        stream=stream,
        name=name,
        volume=cropped,
        truth=_crop(truth, axis, lo, hi),
        brain=None if mask is None else _crop(mask, axis, lo, hi),
        stats_source=(volume.data, mask),
        axis=axis,
        kept=(lo, hi),
    )


def list_cases(root: Path, margin: int, split: str = "test") -> list[Case]:
    """BRATS patients of ``split`` (T1c, FLAIR) and, for the test split, the MSLUB patients (FLAIR).

    ``split="validation"``: the BRATS validation patients only, on which propagation settings are tuned
    (``bench/propagation_tuning.py``); the report of this script uses ``test``.
    """
    cases = []
    brats = root / "brain" / "brats-deepmedic" / split
    for modality, prefix in (("T1c", "T1c"), ("FLAIR", "Flair")):
        for folder in sorted(p for p in brats.iterdir() if p.is_dir()):
            patient = folder.name.split("_")[2]
            cases.append(
                load_case(
                    f"BRATS-{modality}",
                    patient,
                    next(folder.glob(f"{prefix}_*.nii*")),
                    next(folder.glob("OTMultiClass.nii*")),
                    next(folder.glob("brainmask.nii*")),
                    margin,
                )
            )
    if split != "test":
        return cases
    mslub = root / "brain" / "mslub" / "cross_sectional" / "MNI"
    for folder in sorted(p for p in mslub.iterdir() if p.is_dir() and p.name.startswith("patient")):
        cases.append(
            load_case(
                "MSLUB-FLAIR",
                folder.name,
                next(folder.glob("FLAIR_*.nii*")),
                next(folder.glob("GOLD_STANDARD_*.nii*")),
                None,
                margin,
            )
        )
    return cases


def clicks_to_reach(curve: list[float], threshold: float) -> int | None:
    """First click count (1-based) with Dice ≥ threshold (%), or ``None`` within the budget."""
    return next((i + 1 for i, value in enumerate(curve) if 100.0 * value >= threshold), None)


def run(
    cases: list[Case],
    model: str,
    strategy: str,
    propagate: bool,
    budget: int,
    seed: int,
    propagation: PropagationConfig | None = None,
) -> list[dict]:
    """All streams of one configuration; one row per volume (``propagation``: default ``PropagationConfig()``)."""
    rows = []
    for stream in dict.fromkeys(case.stream for case in cases):
        predictor = clickadapt.load_predictor(model, adapt=strategy, safety=False, undo_depth=0)
        session = VolumeSession(predictor, propagation or PropagationConfig())
        for case in (c for c in cases if c.stream == stream):
            clip = predictor.meta.preprocessing.clip_percentiles
            stats = brain_intensity_stats(case.stats_source[0], case.stats_source[1], clip)
            session.set_volume(case.volume, case.brain, stats, volume_id=f"{stream}/{case.name}")
            start = time.perf_counter()
            curve = simulate_volume(session, case.truth, VolumeUser(seed, case.axis), budget, propagate)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "stream": stream,
                    "volume": case.name,
                    "strategy": strategy,
                    "mode": "propagation" if propagate else "slice-by-slice",
                    "dice": curve,
                    "slices": case.volume.shape[case.axis],
                    "kept": list(case.kept),
                    "lesion_slices": int(
                        np.count_nonzero(case.truth.sum(axis=tuple(a for a in range(3) if a != case.axis)))
                    ),
                    "seconds": seconds,
                    "model_version": predictor.model_version,
                }
            )
            print(
                f"{strategy:7s} {rows[-1]['mode']:15s} {stream:12s} {case.name:10s} "
                f"dice@1/5/10 {[round(100 * curve[i - 1], 1) for i in REPORT_AT if i <= budget]} {seconds:.0f}s",
                flush=True,
            )
    return rows


def summarise(rows: list[dict], budget: int) -> list[str]:
    """Markdown table rows: per configuration and stream group, then all volumes."""
    lines = [
        "| mode | model | volumes | n | Dice@1 | Dice@5 | Dice@10 | NoC80 | fail80 | NoC85 | fail85 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("propagation", "slice-by-slice"):
        for strategy in ("frozen", "oaims"):
            chosen = [r for r in rows if r["mode"] == mode and r["strategy"] == strategy]
            if not chosen:
                continue
            groups = [(s, [r for r in chosen if r["stream"] == s]) for s in dict.fromkeys(r["stream"] for r in chosen)]
            for group, members in [*groups, ("all", chosen)]:
                cells = [mode, strategy, group if group != "all" else "**all**", str(len(members))]
                for at in REPORT_AT:
                    cells.append(f"{100 * np.mean([r['dice'][min(at, budget) - 1] for r in members]):.1f}")
                for threshold in THRESHOLDS:
                    reached = [clicks_to_reach(r["dice"], threshold) for r in members]
                    noc = [budget if c is None else c for c in reached]
                    cells.append(f"{np.mean(noc):.1f}")
                    cells.append(f"{sum(c is None for c in reached)}/{len(members)}")
                lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    """Run the four configurations and write the Markdown report (and the raw curves as JSON beside it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="brain", help="'brain' (the shipped model) or a checkpoint path")
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--margin", type=int, default=3, help="axial slices kept beyond the lesion's extent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--strategies", default="frozen,oaims")
    parser.add_argument("--modes", default="propagation,slice-by-slice")
    parser.add_argument("--limit", type=int, default=0, help="only the first N volumes (0 = all)")
    parser.add_argument(
        "--max-intensity-shift",
        default=None,
        help="propagation's 'faded' rule threshold, or 'none' to switch it off (default: PropagationConfig's)",
    )
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=Path("bench/results/volumes.md"))
    parser.add_argument("--machine", default=platform.platform())
    parser.add_argument("--date", default=datetime.now(UTC).date().isoformat(), help="date of the run (UTC)")
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="*",
        default=None,
        help="write the report from the JSON files of earlier runs (e.g. one process per configuration)",
    )
    args = parser.parse_args()
    propagation = PropagationConfig()
    if args.max_intensity_shift is not None:
        shift = None if args.max_intensity_shift.lower() == "none" else float(args.max_intensity_shift)
        propagation = PropagationConfig(max_intensity_shift=shift)
    torch.set_num_threads(args.threads)
    model_path = resolve_model_spec(args.model)
    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    cases = list_cases(args.data_root or default_data_root(), args.margin)
    if args.limit:
        cases = cases[: args.limit]
    started = time.perf_counter()
    rows: list[dict] = []
    if args.combine:
        for part in args.combine:
            loaded = json.loads(part.read_text())
            if loaded["model_sha256"] != sha:
                raise SystemExit(f"{part} was run with another model ({loaded['model_sha256']})")
            rows.extend(loaded["rows"])
    else:
        for mode in args.modes.split(","):
            for strategy in args.strategies.split(","):
                rows.extend(
                    run(cases, str(model_path), strategy, mode == "propagation", args.budget, args.seed, propagation)
                )
    total = sum(r["seconds"] for r in rows) if args.combine else time.perf_counter() - started
    command = "  .venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv)
    report = [
        "# Volumes: clicks per volume with the 2D model, propagation vs slice by slice, frozen vs adapting",
        "",
        f"Run {args.date} on {args.machine}; {total / 60:.1f} min of simulated"
        " interaction in all (the sum over configurations, which may have run side by side).",
        "",
        "```",
        command,
        "```",
        "",
        f"- Model: `{model_path.name}` (`{args.model}`), SHA-256 of the file `{sha}`.",
        f"- Volumes (n = {len(cases)}): "
        + ", ".join(f"{c.stream} {c.name} (slices {c.kept[0]}..{c.kept[1] - 1})" for c in cases)
        + f". Each is cropped along its axial axis to the lesion's slices ± {args.margin} (to keep the run short);"
        " intensity statistics come from the whole volume (BRATS: its brain mask; MSLUB: non-zero voxels).",
        "- Streams: per dataset and modality, patients in order, each starting from the checkpoint; `oaims` carries",
        "  its adapted weights from volume to volume within a stream (safety layer off, for time).",
        f"- Simulated user `oaims-3d` (seed {args.seed}, budget {args.budget}): each click goes to the axial slice",
        "  holding most of the largest 26-connected 3D error component, where the 2D OAIMS rule picks a random pixel",
        "  of the largest 2D error region with its true class. Clicking on another slice accepts the open one",
        "  (after-image update for `oaims`; its per-click update runs on every user click). With propagation, the",
        "  clicked slice is propagated after every click (seed clicks at the deepest interior points of the",
        "  previous slice's mask, with the settings"
        f" `{propagation.model_dump_json()}`; the defaults were tuned on the BRATS validation volumes before this run,"
        " `bench/results/propagation_tuning.md`), never over the user's slices; slice by slice, only clicked"
        " slices are labelled.",
        "- Dice@k: mean 3D lesion Dice (%) after k clicks on the cropped volume (false positives outside the kept",
        "  slices are not counted). NoC80/85: mean clicks to reach 3D Dice 80/85 %, a volume that never does counts",
        f"  as {args.budget}; fail: volumes that never reached it within the budget.",
        "",
        *summarise(rows, args.budget),
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(report))
    args.output.with_suffix(".json").write_text(json.dumps({"model_sha256": sha, "rows": rows}, indent=1))
    print("\n".join(report))


if __name__ == "__main__":
    main()
