"""``clickadapt bench-latency`` on a tiny checkpoint and two images (smoke tests: no timing asserts)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from clickadapt import cli
from clickadapt.data.sample import Sample
from clickadapt.evaluation import latency
from clickadapt.evaluation.latency import (
    LatencySettings,
    RunSpec,
    measure_http,
    measure_stream,
    median_ms,
    p95_ms,
    render_report,
    run_benchmark,
    target_rows,
    untune_network,
)
from clickadapt.models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from clickadapt.models.factory import ModelConfig, build_model
from clickadapt.tasks import BRAIN

SIZE = 32


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


def test_measure_stream_times_every_click_and_finish(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    samples = [lesion_sample(0), lesion_sample(1)]
    spec = RunSpec(label="default", task="brain", strategy="oaims", model_path=str(checkpoint), budget=3, threads=1)
    result = measure_stream(spec, samples)
    clicks = len(result.click_s)
    assert result.images == 2 and result.trained and result.size == SIZE
    assert 2 <= clicks <= 6 and len(result.first_click_s) == 2
    assert len(result.later_click_s) == clicks - 2 == len(result.update_s)
    assert len(result.finish_s) == 2 and all(value > 0 for value in result.click_s + result.finish_s)
    assert set(result.dice) == {"lesion"} and len(result.dice["lesion"]) == 3
    assert result.peak_rss_mb > 0


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


def test_run_benchmark_writes_the_report_with_command_machine_and_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    samples = [lesion_sample(0), lesion_sample(1)]
    monkeypatch.setattr(latency, "load_stream", lambda task, settings: (samples, f"{task}: 2 synthetic images"))
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


def test_cli_registers_bench_latency() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["bench-latency", "--stream-limit", "3", "--device", "cpu", "--no-http"])
    assert args.handler is latency.run_command
    settings = latency.settings_from_args(args)
    assert settings.stream_limit == 3 and settings.device == "cpu" and not settings.http
    with pytest.raises(ValueError, match="--tasks"):
        latency.settings_from_args(parser.parse_args(["bench-latency", "--tasks", "lungs"]))


@pytest.mark.slow
def test_measure_http_drives_a_real_server(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    samples = [lesion_sample(0), lesion_sample(1)]
    settings = LatencySettings(budget=2, threads=1)
    result = measure_http(BRAIN, checkpoint, samples, "oaims", settings, tmp_path / "work")
    assert result.images == 2 and len(result.first_click_s) == 2 and len(result.finish_s) == 2
    assert len(result.server_click_s) == len(result.click_s) >= 2
    assert set(result.dice) == {"lesion"}
