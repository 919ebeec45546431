"""Tune slice propagation's "faded" stop rule on the BRATS *validation* volumes; writes the chosen setting.

For each candidate ``max_intensity_shift`` (``None`` = no intensity rule), the simulated volume user
``oaims-3d`` clicks 10 times on each validation volume (pat0003 and pat0004, T1c and FLAIR, cropped to the
lesion ± ``--margin`` slices) with the frozen shipped brain model and propagation after every click, as
``bench/volumes.py`` does on the test volumes. The candidate with the best mean 3D Dice over clicks 1..10
(all validation volumes) becomes the default of :class:`clickadapt.volumes.PropagationConfig`; the test
volumes of ``bench/results/volumes.md`` play no part. Reproduce::

    .venv/bin/python -m bench.propagation_tuning --output bench/results/propagation_tuning.md
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from bench.volumes import list_cases, run
from clickadapt.paths import default_data_root, resolve_model_spec
from clickadapt.volumes import PropagationConfig

CANDIDATES: tuple[float | None, ...] = (None, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
"""``max_intensity_shift`` values tried (source-lesion standard deviations)."""


def mean_over_clicks(rows: list[dict]) -> float:
    """Mean 3D Dice (%) over clicks 1..budget and volumes."""
    return 100.0 * float(np.mean([np.mean(row["dice"]) for row in rows]))


def main() -> None:
    """Run every candidate on the validation volumes and write the Markdown table (and JSON beside it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="brain")
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--margin", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--machine", default=platform.platform())
    parser.add_argument("--output", type=Path, default=Path("bench/results/propagation_tuning.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = str(resolve_model_spec(args.model))
    cases = list_cases(args.data_root or default_data_root(), args.margin, split="validation")
    started = time.perf_counter()
    results: list[dict] = []
    for shift in CANDIDATES:
        config = PropagationConfig(max_intensity_shift=shift)
        rows = run(cases, model, "frozen", True, args.budget, args.seed, config)
        results.append({"max_intensity_shift": shift, "config": config.model_dump(), "rows": rows})
        print(f"max_intensity_shift {shift}: mean Dice over clicks {mean_over_clicks(rows):.1f}", flush=True)
    best = max(results, key=lambda result: mean_over_clicks(result["rows"]))
    lines = [
        "# Tuning slice propagation's stop rule on validation volumes",
        "",
        f"Run {datetime.now(UTC).date().isoformat()} on {args.machine}, CPU, {args.threads} torch thread(s); "
        f"{(time.perf_counter() - started) / 60:.1f} min.",
        "",
        "```",
        "  .venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv),
        "```",
        "",
        f"- Model: `{Path(model).name}`, frozen. Volumes (n = {len(cases)}, BRATS **validation** patients, never "
        "reported on): " + ", ".join(f"{c.stream} {c.name} (slices {c.kept[0]}..{c.kept[1] - 1})" for c in cases) + ".",
        "  The brain model's training data includes these patients' FLAIR slices (`configs/train_brain.yaml`), so",
        "  FLAIR here is easier than on unseen patients; T1c is a modality the model never saw.",
        f"- User `oaims-3d`, seed {args.seed}, {args.budget} clicks, propagation after every click (as in",
        "  `bench/volumes.py`). Criterion: mean 3D lesion Dice over clicks 1..10 and volumes.",
        "",
        "| max_intensity_shift | "
        + " | ".join(f"{c.stream} {c.name} Dice@1/5/10" for c in cases)
        + " | mean over clicks |",
        "|---|" + "---|" * len(cases) + "---|",
    ]
    for result in results:
        cells = [str(result["max_intensity_shift"])]
        for row in result["rows"]:
            curve = row["dice"]
            cells.append("/".join(f"{100 * curve[min(k, len(curve)) - 1]:.1f}" for k in (1, 5, 10)))
        cells.append(f"{mean_over_clicks(result['rows']):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Chosen: `max_intensity_shift = {best['max_intensity_shift']}` (the best mean over clicks).", ""]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
