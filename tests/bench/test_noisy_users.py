"""Noisy-user experiments of a suite (``noisy_users``): their own labels and cache keys, the user reaches the
stream engine, and the report's "Imperfect users" section."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from bench.harness.config import parse_bench_config
from bench.harness.constants import NOISY_GROUP, RAW_CSV, REPORT_MD
from bench.harness.execution import run_bench
from bench.harness.plan import plan_bench
from tiny_suite import BUDGET, bench_mapping

NOISY = "oaims+jitter3+wrong50"


def noisy_mapping(root: Path) -> dict[str, Any]:
    mapping = bench_mapping(root)
    mapping["noisy_users"] = [
        {"streams": ["tiny"], "strategies": ["frozen", "post"], "budgets": [BUDGET], "order_seeds": [0], "user": NOISY}
    ]
    return mapping


def test_noisy_runs_have_their_own_labels_keys_and_user(tmp_path: Path) -> None:
    plan = plan_bench(parse_bench_config(noisy_mapping(tmp_path)))
    jobs = {(job.label, job.budget, job.order_seed): job for job in plan.jobs}
    noisy, clean = jobs[(f"post ({NOISY})", BUDGET, 0)], jobs[("post", BUDGET, 0)]
    assert noisy.groups == [NOISY_GROUP] and noisy.user == NOISY and clean.user == "oaims"
    assert noisy.key != clean.key
    assert noisy.strategy.name == "post" and noisy.source_key == clean.source_key  # forgetting: the exact user
    assert (f"frozen ({NOISY})", BUDGET, 0) in jobs


def test_noisy_user_config_errors_name_the_field(tmp_path: Path) -> None:
    mapping = noisy_mapping(tmp_path)
    without_user = [{key: value for key, value in mapping["noisy_users"][0].items() if key != "user"}]
    with pytest.raises(ValueError, match=r"suite\.yaml: .*noisy_users\.0\.user: .*names its simulated user"):
        parse_bench_config(mapping | {"noisy_users": without_user}, "suite.yaml")
    unknown = [mapping["noisy_users"][0] | {"user": "oaims+wobble7"}]
    with pytest.raises(ValueError, match=r"noisy_users\.0\.user"):
        parse_bench_config(mapping | {"noisy_users": unknown}, "suite.yaml")


def test_the_noisy_user_drives_the_run_and_the_report_has_its_section(tmp_path: Path) -> None:
    mapping = noisy_mapping(tmp_path)
    mapping["experiments"] = mapping["experiments"][:1]
    mapping["ablations"] = []
    config = parse_bench_config(mapping)
    output = run_bench(config, command="python -m bench tiny.yaml")
    with (output / RAW_CSV).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    clicks: dict[tuple[str, str], str] = {}
    for row in rows:
        if row["order_seed"] == "0":
            clicks[(row["user"], row["image_key"])] = row["clicks"]
    noisy_users = {row["user"] for row in rows if row["strategy"].endswith(f"({NOISY})")}
    assert noisy_users == {NOISY}
    # Half of the noisy user's clicks carry the wrong class: its clicks differ from the exact user's somewhere.
    noisy_clicks = {image: text for (user, image), text in clicks.items() if user == NOISY}
    exact_clicks = {image: text for (user, image), text in clicks.items() if user == "oaims"}
    assert noisy_clicks and any(noisy_clicks[image] != exact_clicks[image] for image in noisy_clicks)
    report = (output / REPORT_MD).read_text(encoding="utf-8")
    section = report.split("## Imperfect users", 1)[1].split("\n## ", 1)[0]
    assert "### `tiny`" in section
    assert f"| `{NOISY}` | post |" in section and "| `oaims` | post |" in section
    noisy_post = next(line for line in section.splitlines() if line.startswith(f"| `{NOISY}` | post |"))
    assert "n=3" in noisy_post  # the 3 images of the stream, with intervals
