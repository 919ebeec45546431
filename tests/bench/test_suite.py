"""The benchmark suite (``python -m bench``): config errors, cache, report from raw files, dry run, stream caps."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from bench.harness import execution
from bench.harness.cache import read_json, run_cache_path
from bench.harness.cli import main as bench_main
from bench.harness.config import load_bench_config, parse_bench_config
from bench.harness.constants import (
    BENCH_JSON,
    DISCUSSION_BEGIN,
    DISCUSSION_END,
    DISCUSSION_PLACEHOLDER,
    RAW_CSV,
    REPORT_MD,
    RUNS_CSV,
)
from bench.harness.execution import plan_with_cached_tuning, run_bench
from bench.harness.numbers import compare, select_tuned, stream_numbers
from bench.harness.plan import plan_bench
from bench.harness.raw import read_raw
from bench.harness.report import write_bench_report
from bench.harness.restore import restore_cache
from tiny_suite import BUDGET, IMAGES, SIZE, bench_mapping, write_folder_dataset

from clickadapt.data.sample import Sample
from clickadapt.evaluation.config import parse_evaluation_config
from clickadapt.evaluation.stream import cap_stream


@dataclass
class BenchOutcome:
    """Two runs of the same suite and the calls each made to the evaluation path."""

    config_path: Path
    output: Path
    first_calls: dict[str, int]
    second_calls: dict[str, int]
    report: str


def counting(function: Callable[..., Any], calls: dict[str, int], name: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[name] = calls.get(name, 0) + 1
        return function(*args, **kwargs)

    return wrapper


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> BenchOutcome:
    root = tmp_path_factory.mktemp("bench")
    mapping = bench_mapping(root)
    config_path = root / "bench.yaml"
    config_path.write_text(yaml.safe_dump(mapping))
    config = load_bench_config(config_path)
    counts: list[dict[str, int]] = []
    with pytest.MonkeyPatch.context() as patch:
        for _ in range(2):
            calls: dict[str, int] = {}
            patch.setattr(execution, "run_stream", counting(execution.run_stream, calls, "run_stream"))
            patch.setattr(execution, "evaluate_frozen", counting(execution.evaluate_frozen, calls, "evaluate_frozen"))
            run_bench(config, command="python -m bench tiny.yaml")
            counts.append(calls)
            patch.undo()
    return BenchOutcome(config_path, config.output, counts[0], counts[1], (config.output / REPORT_MD).read_text())


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    mapping = bench_mapping(tmp_path)
    bad_strategy = mapping | {"experiments": [{"streams": ["all"], "strategies": ["frozen", "nope"]}]}
    with pytest.raises(
        ValueError, match=r"suite\.yaml: experiments\.0\.strategies\.1\.name: .*unknown strategy 'nope'"
    ):
        parse_bench_config(bad_strategy, "suite.yaml")
    bad_budget = mapping | {"experiments": [{"streams": ["all"], "strategies": ["frozen"], "budgets": [0]}]}
    with pytest.raises(ValueError, match=r"experiments\.0\.budgets: .*at least 1 click"):
        parse_bench_config(bad_budget, "suite.yaml")
    bad_stream = mapping | {"ablations": [{"streams": ["absent"], "strategies": ["frozen"]}]}
    with pytest.raises(ValueError, match=r"ablations\.0\.streams: unknown stream\(s\) \['absent'\]"):
        parse_bench_config(bad_stream, "suite.yaml")
    with pytest.raises(ValueError, match=r"streams\.0\.name: String should match pattern"):
        parse_bench_config(mapping | {"streams": [mapping["streams"][0] | {"name": "Bad Name"}]}, "suite.yaml")
    clash = {"streams": ["tiny"], "strategies": [{"name": "post", "label": "frozen"}], "budgets": [BUDGET]}
    with pytest.raises(ValueError, match=r"label 'frozen' means two different strategies on stream 'tiny'"):
        parse_bench_config(mapping | {"ablations": [clash]}, "suite.yaml")
    with pytest.raises(ValueError, match=r"suite\.yaml: streams: Field required"):
        parse_bench_config({key: value for key, value in mapping.items() if key != "streams"}, "suite.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"list\.yaml: expected a mapping"):
        load_bench_config(path)
    with pytest.raises(FileNotFoundError, match=r"absent\.yaml does not exist"):
        load_bench_config(tmp_path / "absent.yaml")


def test_same_setting_under_two_labels_shares_one_cache_key(tmp_path: Path) -> None:
    mapping = bench_mapping(tmp_path)
    mapping["ablations"][0]["strategies"].append(
        {"name": "post", "label": "post-sigma3", "overrides": {"ccg_sigma": 3}}
    )
    plan = plan_bench(parse_bench_config(mapping))
    keys = {(job.label, job.budget, job.order_seed): job.key for job in plan.jobs}
    assert keys[("post-sigma3", BUDGET, 0)] == keys[("post", BUDGET, 0)]  # σ = 3 is the default
    assert keys[("post-linear", BUDGET, 0)] != keys[("post", BUDGET, 0)]
    assert keys[("post", BUDGET, 0)] != keys[("post", BUDGET, 1)] != keys[("post", 1, 0)]
    post = next(job for job in plan.jobs if job.label == "post" and job.budget == BUDGET and job.order_seed == 0)
    assert post.groups == ["main", "ablation"]  # listed once, reported in both sections


@pytest.mark.slow  # shares one module fixture: the suite run twice (~10 s)
def test_second_run_computes_nothing(outcome: BenchOutcome) -> None:
    # 5 distinct runs: frozen once (its order does not matter), post × orders 0, 1 at budget 2, post at budget 1,
    # post-linear (post is shared); the original model on the source set once per (budget, click seed): (2, 0),
    # (1, 0), and the adapted model once per adapting run (4).
    assert outcome.first_calls == {"run_stream": 5, "evaluate_frozen": 6}
    assert outcome.second_calls == {}
    assert len(list((outcome.output.parent / "cache" / "runs").glob("*.json"))) == 5


@pytest.mark.slow  # shares one module fixture: the suite run twice (~10 s)
def test_raw_files_hold_every_run(outcome: BenchOutcome) -> None:
    meta, runs = read_raw(outcome.output)
    assert meta["command"] == "python -m bench tiny.yaml" and meta["missing"] == []
    assert meta["streams"][0]["used"] == 3 and meta["streams"][0]["available"] == IMAGES
    found = sorted(
        (run.label, run.budget, run.result.order_seed, run.result.click_seed, "+".join(run.groups)) for run in runs
    )
    assert found == [
        ("frozen", 2, 0, 0, "main"),
        ("post", 1, 0, 0, "main"),
        ("post", 2, 0, 0, "main+ablation"),
        ("post", 2, 1, 0, "main"),
        ("post-linear", 2, 0, 0, "ablation"),
    ]
    frozen = next(run for run in runs if run.label == "frozen")
    assert [len(image.dice["lesion"]) for image in frozen.result.images] == [BUDGET] * 3
    assert frozen.result.validation_before == frozen.result.validation_after  # frozen forgets nothing
    post = next(run for run in runs if run.label == "post" and run.budget == BUDGET)
    assert post.result.final_version >= 3  # Post-Interaction learns after every image
    with (outcome.output / RAW_CSV).open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 * 3  # runs × images (one region)
    assert {len(row["dice"].split()) for row in rows} == {1, 2}


@pytest.mark.slow  # shares one module fixture: the suite run twice (~10 s)
def test_report_regenerates_from_raw_files_alone(outcome: BenchOutcome, tmp_path: Path) -> None:
    copy = tmp_path / "results"
    copy.mkdir()
    for name in (RAW_CSV, RUNS_CSV, BENCH_JSON):
        shutil.copy(outcome.output / name, copy / name)
    paths = write_bench_report(copy)
    report = (copy / REPORT_MD).read_text()
    assert paths[0] == copy / REPORT_MD and report == outcome.report
    assert (copy / "plots" / "tiny_dice_vs_click.png").is_file()
    assert (copy / "plots" / "tiny_learning_curves.png").is_file()
    assert (copy / "plots" / "tiny_ablation_dice_vs_click.png").is_file()
    for text in ("Command: `python -m bench tiny.yaml`", "## Tiny lesions (`tiny`)", "## Ablations", "post-linear"):
        assert text in report
    assert "| frozen |" in report and "lesion Dice@1" in report and "forgetting@2" in report
    edited = report.replace(DISCUSSION_PLACEHOLDER, "Hand-written: PI helps here.")
    (copy / REPORT_MD).write_text(edited)
    write_bench_report(copy)
    regenerated = (copy / REPORT_MD).read_text()
    begin, end = regenerated.index(DISCUSSION_BEGIN), regenerated.index(DISCUSSION_END)
    assert "Hand-written: PI helps here." in regenerated[begin:end]


@pytest.mark.slow  # shares one module fixture: the suite run twice (~10 s)
def test_report_only_needs_no_models(outcome: BenchOutcome, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main([str(outcome.config_path), "--report-only"]) == 0
    assert "Report regenerated" in capsys.readouterr().out


@pytest.mark.slow  # shares one module fixture: the suite run twice (~10 s)
def test_dry_run_lists_the_experiments(
    outcome: BenchOutcome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_main([str(outcome.config_path), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    lines = [line.split() for line in listing.splitlines() if line.startswith("tiny ")]
    assert [line[:7] for line in lines] == [  # stream, strategy, budget, order, click seed, images, state
        ["tiny", "frozen", "2", "0", "0", "3", "cached"],
        ["tiny", "post", "2", "0", "0", "3", "cached"],
        ["tiny", "post", "2", "1", "0", "3", "cached"],
        ["tiny", "post", "1", "0", "0", "3", "cached"],
        ["tiny", "post-linear", "2", "0", "0", "3", "cached"],
    ]
    assert "5 runs, 5 distinct (5 cached, 0 to run)" in listing
    fresh = yaml.safe_load(outcome.config_path.read_text()) | {"cache_dir": str(tmp_path / "empty")}
    fresh_path = tmp_path / "fresh.yaml"
    fresh_path.write_text(yaml.safe_dump(fresh))
    assert bench_main([str(fresh_path), "--dry-run", "--no-restore"]) == 0
    listing = capsys.readouterr().out
    assert "(0 cached, 5 to run)" in listing and "Estimated CPU time" in listing
    assert not (tmp_path / "empty").exists()  # a dry run computes nothing
    assert bench_main([str(fresh_path), "--dry-run"]) == 0  # seeds the cache from the output's raw files
    assert "(5 cached, 0 to run)" in capsys.readouterr().out
    assert bench_main([str(fresh_path), "--dry-run", "--only", "nope"]) == 2
    assert "--only: unknown stream(s) ['nope']" in capsys.readouterr().err


def sample(patient: str, slice_index: int) -> Sample:
    return Sample(
        image=np.zeros((1, 4, 4), dtype=np.float32),
        label=np.zeros((4, 4), dtype=np.int64),
        task="brain",
        dataset="d",
        domain="m",
        patient=patient,
        slice_index=slice_index,
        source="memory",
    )


def test_cap_stream_spreads_over_patients() -> None:
    stream = [sample("a", index) for index in range(10)] + [sample("b", 0), sample("b", 1)]
    stream += [sample("c", index) for index in range(5)]
    assert [s.key for s in cap_stream(stream, 3, "first")] == ["d/m/a/0", "d/m/a/1", "d/m/a/2"]
    # 7 images over patients with 10, 2 and 5 slices: b gives its 2, the other 5 are shared 3 / 2 (a / c).
    chosen = [(s.patient, s.slice_index) for s in cap_stream(stream, 7, "spread")]
    assert chosen == [("a", 1), ("a", 5), ("a", 8), ("b", 0), ("b", 1), ("c", 1), ("c", 3)]
    assert cap_stream(stream, None, "spread") == stream and cap_stream(stream, 99, "spread") == stream
    with pytest.raises(ValueError, match="at least 1 image"):
        cap_stream(stream, 0, "spread")


def test_a_full_length_suite_rejects_caps_below_100(tmp_path: Path) -> None:
    mapping = bench_mapping(tmp_path) | {"capped": False}
    with pytest.raises(ValueError, match=r"streams \['tiny'\] are capped below 100 images"):
        parse_bench_config(mapping)
    assert (
        parse_bench_config(mapping | {"max_images": 100}).stream_cap(
            parse_bench_config(mapping | {"max_images": 100}).streams[0]
        )
        == 100
    )
    assert parse_bench_config(mapping | {"max_images": None}).capped is False


def test_cap_stream_never_takes_a_patients_end_slices() -> None:
    slices = [sample("a", index) for index in range(10)]
    assert [s.slice_index for s in cap_stream(slices, 1, "spread")] == [5]
    assert [s.slice_index for s in cap_stream(slices, 2, "spread")] == [2, 7]
    assert [s.slice_index for s in cap_stream(slices, 4, "spread")] == [1, 3, 6, 8]
    two_patients = slices + [sample("b", index) for index in range(6)]
    assert [(s.patient, s.slice_index) for s in cap_stream(two_patients, 4, "spread")] == [
        ("a", 2),
        ("a", 7),
        ("b", 1),
        ("b", 4),
    ]


def test_cap_stream_spreads_one_sample_per_patient_over_the_whole_stream() -> None:
    stream = [sample(f"p{index:02d}", 0) for index in range(12)]
    chosen = [s.patient for s in cap_stream(stream, 4, "spread")]
    assert chosen == ["p01", "p04", "p07", "p10"]  # not the first four files
    assert [s.patient for s in cap_stream(stream, 1, "spread")] == ["p06"]
    # Fewer images than patients with several slices each: one middle slice of spread patients.
    several = [sample(f"q{p}", index) for p in range(6) for index in range(5)]
    assert [(s.patient, s.slice_index) for s in cap_stream(several, 3, "spread")] == [("q1", 2), ("q3", 2), ("q5", 2)]


@pytest.mark.slow  # shares one module fixture: the suite run twice (~10 s)
def test_compare_pairs_images_and_clicks_with_a_bootstrap_interval(outcome: BenchOutcome) -> None:
    _, runs = read_raw(outcome.output)
    numbers = stream_numbers(runs, "main")
    comparison = compare(numbers, "post", "frozen", BUDGET, "lesion", BUDGET)
    assert comparison is not None
    difference, verdict, interval = comparison
    frozen = {i.key: i.dice["lesion"][-1] for r in numbers[("frozen", BUDGET)].runs for i in r.result.images}
    post: dict[str, list[float]] = {}
    for run in numbers[("post", BUDGET)].runs:
        for image in run.result.images:
            post.setdefault(image.key, []).append(image.dice["lesion"][-1])
    per_image = [100 * (np.mean(post[key]) - frozen[key]) for key in frozen]
    assert interval.n == 3 and difference == pytest.approx(np.mean(per_image))
    assert interval.low <= difference <= interval.high
    assert verdict == ("holds" if interval.low > 0 else "reversed" if interval.high < 0 else "unresolved")
    assert compare(numbers, "post", "absent", BUDGET, "lesion", BUDGET) is None
    assert "## Dice with 95 % confidence intervals" in outcome.report and "n=3" in outcome.report


def test_evaluation_config_takes_a_subset_policy(tmp_path: Path) -> None:
    folder = {"reader": "folder", "root": str(tmp_path), "task": "brain", "size": SIZE}
    base = {"model": "brain", "stream": folder, "strategies": ["frozen"], "output": str(tmp_path / "out")}
    assert parse_evaluation_config(base).subset == "first"  # the old behaviour stays the default
    assert parse_evaluation_config(base | {"subset": "spread", "limit": 5}).subset == "spread"
    with pytest.raises(ValueError, match=r"eval\.yaml: subset: Input should be 'first' or 'spread'"):
        parse_evaluation_config(base | {"subset": "random"}, "eval.yaml")


@pytest.mark.slow  # one more (mostly cached) run of the tiny suite
def test_a_resumed_bench_computes_the_missing_run_and_keeps_the_history(outcome: BenchOutcome, tmp_path: Path) -> None:
    config = load_bench_config(outcome.config_path)
    cache, output = tmp_path / "cache", tmp_path / "results"
    shutil.copytree(config.cache_dir, cache)
    output.mkdir()
    shutil.copy(outcome.output / BENCH_JSON, output / BENCH_JSON)
    removed = sorted((cache / "runs").glob("*.json"))[0]
    removed.unlink()
    calls: dict[str, int] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(execution, "run_stream", counting(execution.run_stream, calls, "run_stream"))
        run_bench(config.model_copy(update={"cache_dir": cache, "output": output}), command="resume")
    assert calls == {"run_stream": 1} and removed.is_file()
    meta, runs = read_raw(output)
    assert meta["computed_runs"] == 1 and meta["cached_runs"] == 4 and meta["missing"] == [] and len(runs) == 5
    assert [entry["computed_runs"] for entry in meta["invocations"]] == [5, 1]
    assert "The runs were computed by 2 invocation(s)" in (output / REPORT_MD).read_text()


@pytest.mark.slow  # one cached-only pass of the tiny suite (no computation)
def test_cached_only_reports_the_cache_and_computes_nothing(outcome: BenchOutcome, tmp_path: Path) -> None:
    config = load_bench_config(outcome.config_path)
    cache, output = tmp_path / "cache", tmp_path / "results"
    shutil.copytree(config.cache_dir, cache)
    removed = sorted((cache / "runs").glob("*.json"))[0]
    removed.unlink()  # as after an interrupted invocation
    calls: dict[str, int] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(execution, "run_stream", counting(execution.run_stream, calls, "run_stream"))
        patch.setattr(execution, "evaluate_frozen", counting(execution.evaluate_frozen, calls, "evaluate_frozen"))
        run_bench(config.model_copy(update={"cache_dir": cache, "output": output}), command="x", compute=False)
    assert calls == {} and not removed.exists()
    meta, runs = read_raw(output)
    assert len(runs) == 4 and len(meta["missing"]) == 1 and meta["computed_runs"] == 0


@pytest.mark.slow  # a tiny suite with a dev split and a sweep (~10 s)
def test_sweep_tunes_on_the_dev_part_and_reports_on_the_test_part_only(tmp_path: Path) -> None:
    mapping = bench_mapping(tmp_path)
    data = write_folder_dataset(tmp_path / "six", 6)
    mapping["streams"][0]["data"]["root"] = str(data)
    mapping["streams"][0]["dev"] = {"every": 3, "offset": 0}  # 2 of 6 patients tune, 4 are the test part
    mapping["max_images"] = None
    mapping["experiments"] = [{"streams": ["all"], "strategies": ["frozen", "post"], "budgets": [BUDGET]}]
    mapping["experiments"][0]["order_seeds"] = [0]
    mapping["ablations"] = []
    candidates = [
        {"name": "post", "label": "post-lr1e-3", "overrides": {"lr": 1e-3}},
        {"name": "post", "label": "post-lr1e-7", "overrides": {"lr": 1e-7}},
    ]
    mapping["sweep"] = {"strategies": candidates, "budget": BUDGET}
    config = parse_bench_config(mapping)
    plan = plan_bench(config)
    assert {name: stream.part for name, stream in plan.streams.items()} == {"tiny": "test", "tiny-dev": "dev"}
    assert len(plan.streams["tiny-dev"].keys) == 2 and len(plan.streams["tiny"].keys) == 4
    assert not set(plan.streams["tiny-dev"].keys) & set(plan.streams["tiny"].keys)
    run_bench(config, command="sweep")
    _, runs = read_raw(config.output)
    sweep = [run for run in runs if "sweep" in run.groups]
    assert {run.stream for run in sweep} == {"tiny-dev"} and {run.label for run in sweep} == {
        "post-lr1e-3",
        "post-lr1e-7",
    }
    choice = select_tuned(sweep)[("brain", "post")]
    main_post = next(run for run in runs if run.label == "post" and "main" in run.groups)
    assert main_post.stream == "tiny" and main_post.result.overrides == choice.spec.overrides
    assert {image.key for image in main_post.result.images} == set(plan.streams["tiny"].keys)
    resumed = plan_with_cached_tuning(config)  # what --dry-run lists: the tuned main runs are cached
    assert all(read_json(run_cache_path(config.cache_dir, job.key)) is not None for job in resumed.jobs)
    assert any(read_json(run_cache_path(config.cache_dir, job.key)) is None for job in plan_bench(config).jobs)
    report = (config.output / REPORT_MD).read_text()
    assert "## Tuning on the dev parts" in report and "✔" in report
    assert "### Tiny lesions (dev part)" not in report  # dev parts are never reported as results


def test_only_keeps_the_whole_tasks_sweep(tmp_path: Path) -> None:
    """``--only`` one stream still sweeps every dev part of its task: the tuned choice cannot depend on it."""
    mapping = bench_mapping(tmp_path)
    data = write_folder_dataset(tmp_path / "six", 6)
    second = {**mapping["streams"][0], "name": "other", "title": "Other lesions"}
    mapping["streams"] = [mapping["streams"][0], second]
    for stream in mapping["streams"]:
        stream["data"] = {**stream["data"], "root": str(data)}
        stream["dev"] = {"every": 3, "offset": 0}
    mapping["max_images"] = None
    mapping["sweep"] = {"strategies": [{"name": "post", "label": "post-lr1e-3", "overrides": {"lr": 1e-3}}]}
    config = parse_bench_config(mapping)
    only_tiny = plan_bench(config, only=["tiny"])
    assert set(only_tiny.streams) == {"tiny", "tiny-dev", "other-dev"}
    assert {job.stream for job in only_tiny.jobs if "sweep" in job.groups} == {"tiny-dev", "other-dev"}
    assert {job.stream for job in only_tiny.jobs if "main" in job.groups} == {"tiny"}


@pytest.mark.slow  # one cached pass of the tiny suite (no run computed)
def test_a_fresh_clone_resumes_from_the_committed_raw_files(outcome: BenchOutcome, tmp_path: Path) -> None:
    config = load_bench_config(outcome.config_path)
    cache, output = tmp_path / "empty-cache", tmp_path / "results"
    shutil.copytree(outcome.output, output)  # what a clone holds: the raw files, no cache
    summary = restore_cache(output, cache)
    assert summary is not None and summary.restored == 5 and summary.already_cached == 0
    for path in sorted((cache / "runs").glob("*.json")):
        original = read_json(config.cache_dir / "runs" / path.name)
        assert original is not None, f"{path.name} restored under a key the suite never computed"
        restored = read_json(path)
        assert restored is not None and restored["computed_at"] == original["computed_at"]
        assert (
            restored is not None
            and restored["result"]["images"][0]["clicks"] == (original["result"]["images"][0]["clicks"])
        )
    calls: dict[str, int] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(execution, "run_stream", counting(execution.run_stream, calls, "run_stream"))
        run_bench(config.model_copy(update={"cache_dir": cache, "output": output}), command="resume")
    assert "run_stream" not in calls
    assert (output / RAW_CSV).read_bytes() == (outcome.output / RAW_CSV).read_bytes()
    again = restore_cache(output, cache)
    assert again is not None and again.restored == 0 and again.already_cached == 5


@pytest.mark.slow  # needs the tiny suite's raw files (module fixture)
def test_restore_refuses_a_run_with_two_cache_keys(outcome: BenchOutcome, tmp_path: Path) -> None:
    output = tmp_path / "results"
    shutil.copytree(outcome.output, output)
    with (output / RUNS_CSV).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows.insert(1, rows[0] | {"cache_key": "f" * 64})  # the same run again, under another key
    with (output / RUNS_CSV).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match=r"runs\.csv, line 3: run .* has two cache keys"):
        restore_cache(output, tmp_path / "cache")
    assert restore_cache(tmp_path / "nowhere", tmp_path / "cache") is None


@pytest.mark.slow  # shares one module fixture: the suite run twice (~10 s)
def test_each_run_records_when_and_where_it_was_computed(outcome: BenchOutcome) -> None:
    _, runs = read_raw(outcome.output)
    assert len(runs) == 5 and all(run.machine and run.computed_at.startswith("20") for run in runs)
    day = runs[0].computed_at[:10]
    assert f"{day} on {runs[0].machine}: 5 runs" in outcome.report


@pytest.mark.slow  # shares one module fixture: the suite run twice (~10 s)
def test_first_computes_the_named_strategies_runs_before_the_longer_ones(
    outcome: BenchOutcome, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = plan_bench(load_bench_config(outcome.config_path))
    default = [call[0] for call in execution._run_calls(plan, plan.jobs)]
    ordered = [call[0] for call in execution._run_calls(plan, plan.jobs, ["frozen"])]
    assert sorted(default) == sorted(ordered) and "frozen" not in default[0]
    assert "frozen" in ordered[0] and all("frozen" not in description for description in ordered[1:])
    assert bench_main([str(outcome.config_path), "--first", "frozen,nope"]) == 2
    assert "--first: unknown strategy name(s) ['nope']" in capsys.readouterr().err
