"""The latency stream through the HTTP API of a real ``clickadapt serve`` subprocess.

This is a client of the web API, not the engine's click loop: it opens each image, posts the simulated
user's clicks (timed), reads each mask back as a PNG (not timed) to choose the next click, and posts
``finish`` (timed), as the browser would.

The server gets what a person would give it: each sample's source file (a BRATS NIfTI volume, opened at the
sample's slice; a RIM-ONE photograph), which it preprocesses itself. The in-process rows feed the reader's
preprocessed pixels instead; :func:`stage_stream` checks that the server prepares (nearly) the same model
input from the file, so that the two paths differ in their transport only. A sample without such a file (a
synthetic one) is sent as its preprocessed array, which the server normalises again (not the same input).
"""

from __future__ import annotations

import io
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.speed.machine import process_peak_rss_mb
from bench.speed.results import HttpResult, mean_dice_curves, padded_curves
from bench.speed.settings import HTTP_TIMEOUT_S, SERVER_START_TIMEOUT_S, SOURCE_FILE_TOLERANCE, LatencySettings
from clickadapt.clicks.click import Click
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.data.sample import Sample
from clickadapt.evaluation.metrics import region_dice
from clickadapt.evaluation.stream import image_click_seed
from clickadapt.server.images import DecodedSource, decode_file, has_supported_suffix, prepare_source
from clickadapt.tasks import TaskSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerImage:
    """What the server is given for one sample: a file of its data folder and, for a volume, the slice.

    Attributes:
        name: File name in the data folder.
        slice_index: Axial slice of a volume; ``None`` for a 2D file.
        source_file: Whether the file is the sample's own source file (else its preprocessed array).
        input_difference: Largest absolute difference between the sample's pixels and the model input the
            server prepares from the file (units of the normalised input: standard deviations).
    """

    name: str
    slice_index: int | None
    source_file: bool
    input_difference: float


def write_sample_file(sample: Sample, path: Path) -> None:
    """Write one sample's preprocessed image as a file the server reads (for samples without a source file).

    Grey (brain) samples as float32 TIFF, colour (fundus) ones as 8-bit PNG, each channel rescaled to 0..255.
    The server normalises either again (brain: with the slice's own statistics), so its model input differs
    from the sample's.
    """
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


def server_input_difference(sample: Sample, decoded: DecodedSource, task: TaskSpec, slice_index: int | None) -> float:
    """Largest absolute difference between ``sample.image`` and what the server prepares from ``decoded``
    (infinite when the shapes differ or the server cannot prepare it)."""
    try:
        prepared = prepare_source(decoded, task, int(sample.image.shape[-1]), slice_index)
    except ValueError:
        return float("inf")
    if prepared.pixels.shape != sample.image.shape:
        return float("inf")
    return float(np.max(np.abs(prepared.pixels.astype(np.float64) - sample.image)))


class StreamStager:
    """Puts the stream's images into the server's data folder, one :class:`ServerImage` per sample.

    A sample's source file is copied (once per file: the slices of a volume share it) when the server prepares
    the sample's pixels from it within :data:`~bench.speed.settings.SOURCE_FILE_TOLERANCE`; otherwise the
    sample's preprocessed array is written (:func:`write_sample_file`).

    Args:
        folder: The data folder (created).
        task: The stream's task.
    """

    def __init__(self, folder: Path, task: TaskSpec) -> None:
        self.folder = folder
        self.task = task
        folder.mkdir(parents=True, exist_ok=True)
        self._decoded: dict[Path, DecodedSource | None] = {}
        self._copies: dict[tuple[str, Path], str] = {}

    def stage(self, sample: Sample, stem: str, group: str = "stream") -> ServerImage:
        """Put one sample into the folder under a name starting with ``stem``.

        Samples of one ``group`` whose source is the same file (slices of one volume) share one copy of it;
        another group gets its own copy, so the server sees another image.
        """
        source = Path(sample.source)
        decoded = self._decode(source)
        if decoded is not None:
            slice_index = sample.slice_index if decoded.kind == "volume" else None
            difference = server_input_difference(sample, decoded, self.task, slice_index)
            if difference <= SOURCE_FILE_TOLERANCE:
                key = (group, source.resolve())
                name = self._copies.get(key)
                if name is None:
                    name = f"{stem}-{source.name}"
                    shutil.copyfile(source, self.folder / name)
                    self._copies[key] = name
                return ServerImage(name, slice_index, True, difference)
            logger.warning(
                "%s: the server prepares the model input from %s with a difference of %.3g; sending the "
                "preprocessed array instead",
                sample.key,
                source,
                difference,
            )
        name = f"{stem}{sample_file_suffix(sample)}"
        write_sample_file(sample, self.folder / name)
        written = decode_file((self.folder / name).read_bytes(), name)
        return ServerImage(name, None, False, server_input_difference(sample, written, self.task, None))

    def _decode(self, source: Path) -> DecodedSource | None:
        if source not in self._decoded:
            readable = source.is_file() and has_supported_suffix(source.name)
            self._decoded[source] = decode_file(source.read_bytes(), source.name) if readable else None
        return self._decoded[source]


def stage_stream(samples: Sequence[Sample], folder: Path, task: TaskSpec) -> tuple[list[ServerImage], ServerImage]:
    """Put the stream into the server's data folder (:class:`StreamStager`).

    Returns:
        One :class:`ServerImage` per sample, in stream order, and the warm-up image: a separate copy of the
        first sample's file.
    """
    stager = StreamStager(folder, task)
    images = [stager.stage(sample, f"{index:03d}") for index, sample in enumerate(samples)]
    return images, stager.stage(samples[0], "warmup", group="warm-up")


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
        RuntimeError: If the server does not start.
        httpx.HTTPStatusError: If the server refuses a request (e.g. a file of the data folder).
    """
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise

    size = int(samples[0].image.shape[-1])
    folder = workdir / f"{task.name}-data"
    images, warm_up = stage_stream(samples, folder, task)
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
    result = HttpResult(
        task=task.name,
        strategy=strategy,
        images=len(samples),
        size=size,
        autosave=autosave,
        source_files=sum(image.source_file for image in images),
        input_difference=max(image.input_difference for image in images),
    )
    curves = []
    try:
        with httpx.Client(base_url=server.address, timeout=HTTP_TIMEOUT_S, headers={"X-Client-Id": "bench"}) as client:
            _http_warm_up(client, _image_id(client, warm_up), samples[0], settings)
            for image, sample in zip(images, samples, strict=True):
                curves.append(_http_image(client, _image_id(client, image), sample, task, settings, result))
    finally:
        result.server_peak_rss_mb = server.peak_rss_mb
        server.stop()
    result.dice = mean_dice_curves(curves, task.regions)
    return result


def _image_id(client: Any, image: ServerImage) -> str:
    """The server's id of an image of its data folder (registered now for a volume's slice), not timed."""
    response = client.post("/api/data/images", json={"path": image.name, "slice": image.slice_index})
    response.raise_for_status()
    return str(response.json()["image"]["id"])


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
