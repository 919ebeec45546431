"""Why ``clickadapt serve --channel``: TCGA-LGG slices as a user downloads them, through the web application.

A TCGA-LGG kaggle_3m slice is one picture whose three channels are the pre-contrast, FLAIR and post-contrast
slices of a patient. The shipped brain model segments FLAIR. Uploaded as it is, the server averages the
channels to grey (and warns); with ``--channel 1`` it segments the FLAIR channel. This measures both through
the application's own HTTP API (upload, clicks, mask export in the file's frame; FastAPI's test client, no
adaptation, so every image meets the shipped weights): site HT (a hospital the model never saw), the
largest-lesion slice of each of its patients, ``oaims`` simulated user, 5 clicks, click seeds 0-2, lesion Dice
(%) after clicks 1 / 3 / 5 (mean ± sd over the seeds of the mean over the images), and the paired difference
(FLAIR channel − grey average, same image and click seed) with its 95 % bootstrap interval over images.

Writes ``bench/results/channel_choice.md``. Reproduce::

    .venv/bin/python bench/channel_choice.py
"""

from __future__ import annotations

import csv
import io
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.evaluation.metrics import dice
from clickadapt.evaluation.statistics import paired_difference
from clickadapt.paths import default_data_root
from clickadapt.server.app import create_app
from clickadapt.server.settings import ServerSettings

if __package__ in (None, ""):  # run as a script: make the repository root importable for `bench.harness`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.study import write_study_page

OUTPUT = Path("bench/results/channel_choice.md")
SEEDS = (0, 1, 2)
CLICKS = 5
REPORTED = (1, 3, 5)
SITE = "HT"
SETTINGS = {"grey average of the three channels (no --channel)": None, "FLAIR channel (--channel 1)": 1}


def largest_lesion_slices(root: Path, site: str) -> list[tuple[Path, np.ndarray]]:
    """Per patient of ``site``: its slice with the most lesion pixels, as (picture file, binary mask)."""
    chosen = []
    with (root / "selected_slices.tsv").open(encoding="utf-8") as table:
        for row in csv.DictReader(table, delimiter="\t"):
            if row["institution"] != site:
                continue
            folder = root / "kaggle_3m" / row["patient"]
            best: tuple[int, Path, np.ndarray] | None = None
            for number in row["lesion_slice_numbers"].split(","):
                mask = np.asarray(Image.open(folder / f"{row['patient']}_{number}_mask.webp").convert("L")) > 0
                if best is None or int(mask.sum()) > best[0]:
                    best = (int(mask.sum()), folder / f"{row['patient']}_{number}.webp", mask)
            if best is not None:
                chosen.append((best[1], best[2]))
    return chosen


def run_setting(channel: int | None, slices: list[tuple[Path, np.ndarray]]) -> dict[tuple[str, int], list[float]]:
    """Lesion Dice after each click, per (file name, click seed), through the HTTP API."""
    curves: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as store:
        app = create_app(ServerSettings(store=Path(store), model="brain", adaptation=False, channel=channel))
        with TestClient(app, base_url="http://127.0.0.1:8000") as client:
            for path, label in slices:
                uploaded = client.post(f"/api/uploads?filename={path.name}", content=path.read_bytes())
                uploaded.raise_for_status()
                image = uploaded.json()["image"]
                if (image["height"], image["width"]) != label.shape:
                    grid = f"{image['height']}×{image['width']}"
                    raise RuntimeError(f"{path.name}: display grid {grid} is not the file's")
                truth = label.astype(np.int64)
                client.post(f"/api/images/{image['id']}/open").raise_for_status()
                for seed in SEEDS:
                    if seed != SEEDS[0]:  # the clicks of the previous seed go
                        client.post(f"/api/images/{image['id']}/reset").raise_for_status()
                    user = make_simulated_user("oaims", seed)
                    click = user.first_click(truth)
                    curve = []
                    for _ in range(CLICKS):
                        body = {"row": click.row, "col": click.col, "label": click.label}
                        client.post(f"/api/images/{image['id']}/clicks", json=body).raise_for_status()
                        exported = client.get(f"/api/images/{image['id']}/export?format=png")
                        exported.raise_for_status()
                        mask = np.asarray(Image.open(io.BytesIO(exported.content))).astype(np.int64)
                        curve.append(100 * dice(mask, truth, (1,)))
                        following = user.next_click(truth, mask)
                        if following is None:
                            curve.extend([curve[-1]] * (CLICKS - len(curve)))
                            break
                        click = following
                    curves[(path.name, seed)] = curve
    return curves


def main() -> int:
    root = default_data_root() / "brain" / "lgg-kaggle3m"
    slices = largest_lesion_slices(root, SITE)
    results = {name: run_setting(channel, slices) for name, channel in SETTINGS.items()}
    rows = []
    for name, curves in results.items():
        cells = []
        for k in REPORTED:
            means = [statistics.mean(curve[k - 1] for (_, seed), curve in curves.items() if seed == s) for s in SEEDS]
            cells.append(f"{statistics.mean(means):.1f} ± {statistics.stdev(means):.1f}")
        rows.append(f"| {name} | {' | '.join(cells)} |")
        print(rows[-1], flush=True)
    grey, flair = results.values()
    differences = []
    for k in REPORTED:
        interval = paired_difference(
            {key: [curve[k - 1]] for key, curve in flair.items()}, {key: [curve[k - 1]] for key, curve in grey.items()}
        )
        differences.append(
            f"- click {k}: FLAIR channel − grey average {interval.mean:+.1f} [{interval.low:+.1f}, "
            f"{interval.high:+.1f}] (n = {interval.n} images, {len(SEEDS)} click seeds)"
        )
        print(differences[-1], flush=True)
    table = ["| input | " + " | ".join(f"Dice@{k}" for k in REPORTED) + " |", "|---|" + "---|" * len(REPORTED), *rows]
    write_study_page(
        OUTPUT,
        "TCGA-LGG pictures in the web application: the FLAIR channel vs the grey average",
        __doc__,
        "python bench/channel_choice.py",
        f"Images: `{root.name}` site {SITE}, the largest-lesion slice of each of its n = {len(slices)} patients "
        "(lossless WebP copy of the kaggle_3m TIFFs, uploaded as files); model `brain` (shipped), no adaptation",
        table,
        differences,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
