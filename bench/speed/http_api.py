"""The latency stream through the HTTP API of a real ``clickadapt serve`` subprocess.

This is a client of the web API, not the engine's click loop: it opens each image, posts the simulated
user's clicks (timed), reads each mask back as a PNG (not timed) to choose the next click, and posts
``finish`` (timed), as the browser would.
"""

from __future__ import annotations

import io
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.speed.machine import process_peak_rss_mb
from bench.speed.results import HttpResult, mean_dice_curves, padded_curves
from bench.speed.settings import HTTP_TIMEOUT_S, SERVER_START_TIMEOUT_S, LatencySettings
from clickadapt.clicks.click import Click
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.data.sample import Sample
from clickadapt.evaluation.metrics import region_dice
from clickadapt.evaluation.stream import image_click_seed
from clickadapt.tasks import TaskSpec


def write_sample_file(sample: Sample, path: Path) -> None:
    """Write one sample's image as a file the server reads (see :func:`write_stream_folder`)."""
    import tifffile
    from PIL import Image

    if sample.image.shape[0] == 1:
        tifffile.imwrite(path, sample.image[0].astype(np.float32))
        return
    channels = sample.image.astype(np.float64)
    low = channels.min(axis=(1, 2), keepdims=True)
    high = channels.max(axis=(1, 2), keepdims=True)
    scaled = np.round((channels - low) / np.maximum(high - low, 1e-12) * 255.0).astype(np.uint8)
    Image.fromarray(np.ascontiguousarray(scaled.transpose(1, 2, 0)), mode="RGB").save(path)


def sample_file_suffix(sample: Sample) -> str:
    """``.tif`` for grey (brain) samples, ``.png`` for colour (fundus) ones."""
    return ".tif" if sample.image.shape[0] == 1 else ".png"


def write_stream_folder(samples: Sequence[Sample], folder: Path) -> dict[str, Sample]:
    """Write the stream as files the server reads; returns file name → sample.

    Brain slices go as float32 TIFF (the server z-scores them again inside the brain, no resampling at
    the model's size); fundus images as 8-bit PNG, each channel rescaled to 0..255 (the server z-scores
    each channel again, and keeps the size when it equals ``--image-size``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for index, sample in enumerate(samples):
        name = f"{index:03d}{sample_file_suffix(sample)}"
        write_sample_file(sample, folder / name)
        names[name] = sample
    return names


class ServerProcess:
    """A ``clickadapt serve`` subprocess on a free loopback port.

    Args:
        arguments: Options after ``serve``.
        environment: Extra environment variables (e.g. ``CLICKADAPT_AUTOSAVE_EVERY_CLICK``).

    Raises:
        RuntimeError: If the server exits or does not print its address in time (with its output).
    """

    def __init__(self, arguments: Sequence[str], environment: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "clickadapt.cli", "serve", "--port", "0", *arguments]
        env = {**os.environ, **(environment or {})}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
        self.output: list[str] = []
        self.address = self._wait_for_address(command)

    def _wait_for_address(self, command: Sequence[str]) -> str:
        found: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                if "open http" in line and not found:
                    found.append(line.split("open ", 1)[1].strip())
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(SERVER_START_TIMEOUT_S)
        if not found:
            self.stop()
            raise RuntimeError(f"`{shlex.join(command)}` did not start:\n{''.join(self.output)[-3000:]}")
        return found[0].split("?", 1)[0].rstrip("/")

    @property
    def peak_rss_mb(self) -> float | None:
        """The server's peak resident memory so far."""
        return process_peak_rss_mb(self.process.pid)

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def measure_http(
    task: TaskSpec,
    model_path: Path,
    samples: Sequence[Sample],
    strategy: str,
    settings: LatencySettings,
    workdir: Path,
    autosave: bool = True,
) -> HttpResult:
    """Send the stream through a real server: open, clicks (timed), finish (timed), per image.

    The simulated user reads each mask back with ``GET …/mask.png`` (not timed) to choose the next click.

    Args:
        task: The stream's task.
        model_path: The checkpoint the server loads.
        samples: The stream, in stream order.
        strategy: The server's strategy (``frozen`` = ``--no-adaptation``).
        settings: Device, threads, budget, user and seed.
        workdir: Where the stream's files and the server's datastore are written.
        autosave: Whether the server saves the weights after every click that changed them.

    Raises:
        RuntimeError: If the server does not start or an image is missing from its list.
    """
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise

    size = int(samples[0].image.shape[-1])
    folder = workdir / f"{task.name}-data"
    by_name = write_stream_folder(samples, folder)
    warm_up_name = "warmup" + sample_file_suffix(samples[0])
    write_sample_file(samples[0], folder / warm_up_name)
    arguments = ["--model", str(model_path), "--data", str(folder), "--image-size", str(size)]
    arguments += [
        "--store",
        str(workdir / f"store-{task.name}-{strategy}-{int(autosave)}"),
        "--device",
        settings.device,
    ]
    arguments += ["--no-adaptation"] if strategy == "frozen" else ["--strategy", strategy]
    environment = {"CLICKADAPT_AUTOSAVE_EVERY_CLICK": "1" if autosave else "0"}
    if settings.threads is not None:
        environment.update({"OMP_NUM_THREADS": str(settings.threads), "MKL_NUM_THREADS": str(settings.threads)})
    server = ServerProcess(arguments, environment)
    result = HttpResult(task=task.name, strategy=strategy, images=len(samples), size=size, autosave=autosave)
    curves = []
    try:
        with httpx.Client(base_url=server.address, timeout=HTTP_TIMEOUT_S, headers={"X-Client-Id": "bench"}) as client:
            listed = client.get("/api/images")
            listed.raise_for_status()
            ids = {image["name"]: image["id"] for image in listed.json()}
            missing = [name for name in [warm_up_name, *by_name] if name not in ids]
            if missing:
                raise RuntimeError(f"the server does not list {missing[:3]}; it lists {sorted(ids)[:5]}")
            _http_warm_up(client, ids[warm_up_name], samples[0], settings)
            for name, sample in by_name.items():
                curves.append(_http_image(client, ids[name], sample, task, settings, result))
    finally:
        result.server_peak_rss_mb = server.peak_rss_mb
        server.stop()
    result.dice = mean_dice_curves(curves, task.regions)
    return result


def _http_warm_up(client: Any, image_id: str, sample: Sample, settings: LatencySettings) -> None:
    """Two clicks on a copy of the first image, then two undos: warms every code path, leaves the weights."""
    user = make_simulated_user(settings.user, image_click_seed(settings.seed, sample.key))
    client.post(f"/api/images/{image_id}/open", json={}).raise_for_status()
    for click in (user.first_click(sample.label), Click(0, 0, 0)):
        client.post(
            f"/api/images/{image_id}/clicks", json={"row": click.row, "col": click.col, "label": click.label}
        ).raise_for_status()
    for _ in range(2):
        client.post(f"/api/images/{image_id}/undo").raise_for_status()


def _http_image(
    client: Any,
    image_id: str,
    sample: Sample,
    task: TaskSpec,
    settings: LatencySettings,
    result: HttpResult,
) -> dict[str, list[float]]:
    """One image through the API: open, clicks (timed), mask read-backs (not timed), finish (timed).

    Returns:
        Per region, the Dice after clicks 1..budget (the last value repeated after an early stop).
    """
    from PIL import Image

    user = make_simulated_user(settings.user, image_click_seed(settings.seed, sample.key))
    opened = client.post(f"/api/images/{image_id}/open", json={})
    opened.raise_for_status()
    dice_per_click: list[dict[str, float]] = []
    click: Click | None = user.first_click(sample.label)
    count = 0
    while click is not None:
        start = time.perf_counter()
        response = client.post(
            f"/api/images/{image_id}/clicks", json={"row": click.row, "col": click.col, "label": click.label}
        )
        elapsed = time.perf_counter() - start
        response.raise_for_status()
        count += 1
        result.click_s.append(elapsed)
        (result.first_click_s if count == 1 else result.later_click_s).append(elapsed)
        server_s = response.json().get("last_click_s")
        if server_s is not None:
            result.server_click_s.append(float(server_s))
        mask_response = client.get(f"/api/images/{image_id}/mask.png", params={"tag": "current"})
        mask_response.raise_for_status()
        with Image.open(io.BytesIO(mask_response.content)) as picture:
            prediction = np.asarray(picture, dtype=np.int64)
        dice_per_click.append(region_dice(prediction, sample.label, task))
        if count >= settings.budget:
            break
        click = user.next_click(sample.label, prediction)
    start = time.perf_counter()
    finished = client.post(f"/api/images/{image_id}/finish")
    elapsed = time.perf_counter() - start
    finished.raise_for_status()
    result.finish_s.append(elapsed)
    return padded_curves(dice_per_click, task.regions, settings.budget)
