"""The latency harness ``bench.speed`` on a tiny checkpoint and two images (smoke tests: no timing asserts)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from bench.speed import benchmark, http_api, in_process
from bench.speed.benchmark import run_benchmark
from bench.speed.cli import build_parser, main, settings_from_args
from bench.speed.http_api import measure_http, stage_stream
from bench.speed.in_process import TimedSession, measure_stream
from bench.speed.network import untune_network
from bench.speed.report import render_report, target_rows
from bench.speed.results import mean_dice_curves, median_ms, p95_ms, padded_curves
from bench.speed.settings import LatencySettings, RunSpec

from clickadapt import cli
from clickadapt.clicks.click import Click
from clickadapt.clicks.simulators import SimulatedUser
from clickadapt.data.brain import volume_samples
from clickadapt.data.registry import DatasetConfig
from clickadapt.data.sample import Sample
from clickadapt.evaluation import stream
from clickadapt.models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from clickadapt.models.factory import ModelConfig, build_model
from clickadapt.tasks import BRAIN

SIZE = 32
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_checkpoint(path: Path, size: int = SIZE) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(widths=[4, 8, 16], affine_norm=True)
    model = build_model(config, BRAIN.input_channels, BRAIN.num_classes)
    save_checkpoint(path, model, CheckpointMeta(task="brain", model=config, preprocessing={"size": size}))
    return path


def lesion_sample(index: int, size: int = SIZE) -> Sample:
    """A grey image with a bright square lesion (with a dark, constant background outside a 'brain')."""
    rng = np.random.default_rng(index)
    label = np.zeros((size, size), dtype=np.int64)
    label[6 + index : 16 + index, 8 : 18 + 2 * index] = 1
    image = (label * 2.0 - 1.0 + 0.2 * rng.standard_normal((size, size))).astype(np.float32)
    image[:2] = image[-2:] = -3.0  # a constant outside-brain border for the server's brain-mask guess
    return Sample(image[None], label, "brain", "synthetic", "T1c", f"p{index}", index, "memory")


def nifti_stream(folder: Path, slices: int = 3, side: int = SIZE - 2) -> list[Sample]:
    """Slices of a synthetic NIfTI volume as the BRATS reader makes them (whole-volume statistics, padded to
    ``SIZE``), the file as their source: a constant background, brighter slices higher up, a lesion in each."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:side, :side]
    brain = (rows - side / 2) ** 2 + (cols - side / 2) ** 2 < (0.45 * side) ** 2
    lesion = np.zeros((side, side, slices), dtype=bool)
    volume = np.full((side, side, slices), -3.0, dtype=np.float32)
    for k in range(slices):
        lesion[8 + k : 16 + k, 9 : 15 + 2 * k, k] = True
        intensities = 1.0 + 0.4 * k + 0.3 * rng.standard_normal((side, side)) + 1.5 * lesion[..., k]
        volume[..., k] = np.where(brain, intensities, -3.0)
    path = folder / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([-1.0, 1.0, 1.0, 1.0])), path)  # stored L, A, S: read as is
    config = DatasetConfig(reader="brats", slice_policy="all", min_lesion_pixels=1, size=SIZE)
    return volume_samples(volume, lesion, volume != -3.0, config, "synthetic", "T1c", "p0", path)


def spy_on_the_click_loop(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, str]]:
    """Record (session, sample key) of every call of the engine's one click loop."""
    calls: list[tuple[Any, str]] = []
    loop = stream.click_through_probed

    def spy(session: Any, sample: Sample, *args: Any, **kwargs: Any) -> Any:
        calls.append((session, sample.key))
        return loop(session, sample, *args, **kwargs)

    monkeypatch.setattr(stream, "click_through_probed", spy)  # `click_through` looks it up at each call
    return calls


class PersistentUser:
    """A simulated user who never stops early: after a perfect mask it clicks its first click again."""

    def __init__(self, user: SimulatedUser) -> None:
        self.user = user

    def first_click(self, label: np.ndarray) -> Click:
        return self.user.first_click(label)

    def next_click(self, label: np.ndarray, prediction: np.ndarray) -> Click | None:
        return self.user.next_click(label, prediction) or self.user.first_click(label)


def test_measure_stream_times_every_click_and_finish(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    samples = [lesion_sample(0), lesion_sample(1)]
    spec = RunSpec(label="default", task="brain", strategy="oaims", model_path=str(checkpoint), budget=3, threads=1)
    result = measure_stream(spec, samples)
    clicks = len(result.click_s)
    assert result.images == 2 and result.trained and result.size == SIZE
    assert 2 <= clicks <= 6 and len(result.first_click_s) == 2
    assert len(result.later_click_s) == clicks - 2 == len(result.update_s) == len(result.snapshot_s)
    assert len(result.finish_s) == 2 and all(value > 0 for value in result.click_s + result.finish_s)
    assert set(result.dice) == {"lesion"} and len(result.dice["lesion"]) == 3
    assert result.peak_rss_mb > 0


def test_the_in_process_measurement_goes_through_the_engines_click_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = spy_on_the_click_loop(monkeypatch)
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    samples = [lesion_sample(0), lesion_sample(1)]
    spec = RunSpec(label="default", task="brain", strategy="oaims", model_path=str(checkpoint), budget=3, threads=1)
    result = measure_stream(spec, samples)
    # once for the untimed warm-up on the first image, then once per image of the stream
    assert [key for _, key in calls] == [samples[0].key, *(sample.key for sample in samples)]
    sessions = [session for session, _ in calls[1:]]
    assert all(isinstance(session, TimedSession) and session.finished for session in sessions)
    # every timing is read from the sessions the engine's loop drove
    assert result.click_s == [seconds for session in sessions for seconds in session.click_wall_s]
    assert result.first_click_s == [session.click_wall_s[0] for session in sessions]
    assert result.update_s == [timing.update_s for session in sessions for timing in session.timings[1:]]
    assert result.snapshot_s == [timing.snapshot_s for session in sessions for timing in session.timings[1:]]
    for session in sessions:  # the wall clock covers what the session timed inside add_click
        assert len(session.click_wall_s) == len(session.clicks)
        assert all(wall >= timing.total_s for wall, timing in zip(session.click_wall_s, session.timings, strict=True))


@pytest.mark.parametrize("strategy", ["frozen", "oaims"])
def test_click_counts_are_budget_times_images_when_the_user_never_stops_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    make_user = in_process.make_simulated_user
    monkeypatch.setattr(in_process, "make_simulated_user", lambda name, seed: PersistentUser(make_user(name, seed)))
    calls = spy_on_the_click_loop(monkeypatch)
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    samples = [lesion_sample(0), lesion_sample(1), lesion_sample(2)]
    budget = 4
    spec = RunSpec(label="default", task="brain", strategy=strategy, model_path=str(checkpoint), budget=budget)
    result = measure_stream(spec, samples)
    images = len(samples)
    assert sum(len(session.clicks) for session, _ in calls[1:]) == budget * images
    assert len(result.click_s) == budget * images and len(result.first_click_s) == images
    assert len(result.later_click_s) == len(result.update_s) == len(result.snapshot_s) == (budget - 1) * images
    assert len(result.finish_s) == images and len(result.dice["lesion"]) == budget
    if strategy == "frozen":
        assert result.update_s == [0.0] * (budget - 1) * images  # frozen never updates
    assert result.snapshot_s == [0.0] * (budget - 1) * images  # undo depth 0: no snapshot


def test_variants_and_untrained_stand_in_run(tmp_path: Path) -> None:
    samples = [lesion_sample(0)]
    for changes in ({"channels_last": True}, {"untuned": True}, {"reuse_displayed_forward": False, "undo_depth": 3}):
        spec = RunSpec(label="v", task="brain", strategy="oaims", model_path=None, widths=(4, 8), budget=2, **changes)
        result = measure_stream(spec, samples)
        assert not result.trained and len(result.click_s) >= 1


def test_untuned_network_computes_the_same_function(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    tuned = load_checkpoint(checkpoint).model.eval()
    untuned = copy.deepcopy(tuned)
    untune_network(untuned)
    assert any(type(module) is torch.nn.InstanceNorm2d for module in untuned.modules())
    assert not any(type(module) is torch.nn.InstanceNorm2d for module in tuned.modules())
    inputs = torch.randn(1, 3, SIZE, SIZE)
    with torch.inference_mode():
        fast, plain = tuned(inputs), untuned(inputs)
    assert fast.is_contiguous(memory_format=torch.channels_last) and plain.is_contiguous()
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_statistics_in_milliseconds() -> None:
    values = [0.010, 0.020, 0.030, 0.040, 0.100]
    assert median_ms(values) == pytest.approx(30.0)
    assert p95_ms(values) == pytest.approx(88.0)  # numpy's linear interpolation: 40 + 0.8 · 60
    assert median_ms([]) is None


def test_dice_curves_are_padded_then_averaged_over_images() -> None:
    stopped_early = padded_curves([{"lesion": 0.5}, {"lesion": 1.0}], ["lesion"], 4)
    assert stopped_early == {"lesion": [0.5, 1.0, 1.0, 1.0]}
    full = {"lesion": [0.1, 0.2, 0.3, 0.4]}
    assert mean_dice_curves([stopped_early, full], ["lesion"]) == {"lesion": pytest.approx([0.3, 0.6, 0.65, 0.7])}
    assert mean_dice_curves([], ["lesion"]) == {"lesion": []}


def test_run_benchmark_writes_the_report_with_command_machine_and_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    samples = [lesion_sample(0), lesion_sample(1)]
    monkeypatch.setattr(benchmark, "load_stream", lambda task, settings: (samples, f"{task}: 2 synthetic images"))
    settings = LatencySettings(
        stream_limit=2,
        budget=2,
        threads=1,
        brain_model=str(checkpoint),
        tasks=["brain"],
        http=False,
        tuning=False,
        backbones=False,
        isolate=False,
        output=tmp_path / "results" / "latency.md",
    )
    report = run_benchmark(settings, "python bench/latency.py --test")
    text = settings.output.read_text(encoding="utf-8")
    assert "`python bench/latency.py --test`" in text
    assert "Machine:" in text and "torch" in text and "Date:" in text and "Load at start" in text
    assert "| brain | 32 | frozen | default |" in text and "| brain | 32 | oaims | default |" in text
    raw = json.loads(settings.output.with_suffix(".json").read_text(encoding="utf-8"))
    assert [run["spec"]["strategy"] for run in raw["runs"]] == ["frozen", "oaims"]
    targets = dict((name, measured) for name, measured, _ in target_rows(report))
    assert targets["frozen click-to-mask median, brain 256"] is not None
    assert targets["frozen click-to-mask median, fundus 256"] is None  # no fundus run
    assert render_report(raw) == text


def test_the_committed_report_is_rendered_from_its_json() -> None:
    results = REPOSITORY / "bench" / "results"
    raw = json.loads((results / "latency.json").read_text(encoding="utf-8"))
    assert render_report(raw) == (results / "latency.md").read_text(encoding="utf-8")


def test_the_report_says_what_the_server_was_sent_and_how_close_its_input_was() -> None:
    raw = json.loads((REPOSITORY / "bench" / "results" / "latency.json").read_text(encoding="utf-8"))
    brain = [http for http in raw["http"] if http["task"] == "brain"]
    for http in brain:
        http.update(source_files=http["images"], input_difference=0.0444)
    for http in raw["http"]:
        if http["task"] == "fundus":  # as a result from before this was recorded
            http.pop("source_files", None)
            http.pop("input_difference", None)
    text = render_report(raw)
    expected = f"- brain: {brain[0]['images']} of {brain[0]['images']} images sent as their source file"
    assert text.count(expected) == 1 and "by at most 0.0444 (standard deviations)" in text
    assert "- fundus:" not in text  # results from before it was recorded say nothing


def test_command_line_options_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    settings = settings_from_args(parser.parse_args(["--stream-limit", "3", "--device", "cpu", "--no-http"]))
    assert settings.stream_limit == 3 and settings.device == "cpu" and not settings.http and settings.isolate
    with pytest.raises(ValueError, match="--tasks"):
        settings_from_args(parser.parse_args(["--tasks", "lungs"]))
    assert main(["--tasks", "lungs"]) == 2
    assert "bench/latency.py: error: --tasks" in capsys.readouterr().err
    assert "bench-latency" not in {sub_command.name for sub_command in cli.SUB_COMMANDS}  # it moved to bench/


@pytest.mark.parametrize("entry", [["bench/latency.py"], ["-m", "bench.latency"]])
def test_the_entry_point_runs_from_the_repository_root(entry: list[str]) -> None:
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    command = [sys.executable, *entry, "--help"]
    result = subprocess.run(
        command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "usage: bench/latency.py" in result.stdout and "--stream-limit" in result.stdout


@pytest.mark.slow
def test_measure_http_drives_a_real_server(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    samples = [lesion_sample(0), lesion_sample(1)]
    settings = LatencySettings(budget=2, threads=1)
    result = measure_http(BRAIN, checkpoint, samples, "oaims", settings, tmp_path / "work")
    assert result.images == 2 and len(result.first_click_s) == 2 and len(result.finish_s) == 2
    assert len(result.server_click_s) == len(result.click_s) >= 2
    assert set(result.dice) == {"lesion"} and len(result.dice["lesion"]) == 2


def test_the_server_is_sent_the_source_files_it_prepares_into_the_in_process_input(tmp_path: Path) -> None:
    samples = [*nifti_stream(tmp_path), lesion_sample(0)]  # the last one has no source file
    images, warm_up = stage_stream(samples, tmp_path / "data", BRAIN)
    assert [image.slice_index for image in images] == [sample.slice_index for sample in samples[:3]] + [None]
    assert len({image.name for image in images[:3]}) == 1  # one copy of the volume for its three slices
    assert [image.source_file for image in images] == [True, True, True, False]
    assert all(image.input_difference == 0.0 for image in images[:3])
    assert images[3].input_difference > 0.0  # a preprocessed array is normalised again by the server
    assert warm_up.source_file and warm_up.name != images[0].name and warm_up.slice_index == images[0].slice_index


@pytest.mark.slow
def test_frozen_masks_over_http_are_the_in_process_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTTP rows of the report measure the same masks as the in-process rows: same input, same clicks."""
    predictions: dict[str, list[np.ndarray]] = {"in-process": [], "http": []}

    def recording(path: str, dice: Any) -> Any:
        def record(prediction: np.ndarray, label: np.ndarray, task: Any) -> dict[str, float]:
            predictions[path].append(np.asarray(prediction).copy())
            return dice(prediction, label, task)

        return record

    monkeypatch.setattr(stream, "region_dice", recording("in-process", stream.region_dice))
    monkeypatch.setattr(http_api, "region_dice", recording("http", http_api.region_dice))
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    samples = nifti_stream(tmp_path)
    budget = 3
    spec = RunSpec(label="default", task="brain", strategy="frozen", model_path=str(checkpoint), budget=budget)
    in_process_result = measure_stream(spec, samples)
    http = measure_http(BRAIN, checkpoint, samples, "frozen", LatencySettings(budget=budget, threads=1), tmp_path / "w")
    stream_masks = predictions["in-process"][-len(in_process_result.click_s) :]  # after the untimed warm-up image
    assert len(stream_masks) >= len(samples) and any(mask.any() for mask in stream_masks)
    for in_process_mask, http_mask in zip(stream_masks, predictions["http"], strict=True):
        np.testing.assert_array_equal(http_mask, in_process_mask)
    assert http.dice == in_process_result.dice
    assert http.source_files == len(samples) and http.input_difference == 0.0
