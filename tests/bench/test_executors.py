"""Executors of the plan: the local process pool and a Dask distributed cluster give the same cached runs."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from bench.harness.config import parse_bench_config
from bench.harness.execution import run_bench
from bench.harness.executors import CLUSTER_EXTRA_HINT, InProcessExecutor, LocalPoolExecutor, make_executor
from tiny_suite import bench_mapping

CLUSTER_TIMEOUT_S = 300


def cache_entries(cache_dir: Path) -> dict[str, Any]:
    """Every cache file (``runs/…``, ``source/…``) by relative path, without its timings (keys ending in ``_s``)
    and without when it was computed (``computed_at``)."""

    def untimed(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: untimed(item) for key, item in value.items() if not key.endswith("_s") and key != "computed_at"
            }
        if isinstance(value, list):
            return [untimed(item) for item in value]
        return value

    return {
        str(path.relative_to(cache_dir)): untimed(json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(cache_dir.rglob("*.json"))
    }


def test_make_executor_chooses_by_workers_and_cluster() -> None:
    in_process = make_executor(1, 3)
    assert isinstance(in_process, InProcessExecutor) and in_process.threads == 3
    pool = make_executor(2, 1)
    assert isinstance(pool, LocalPoolExecutor) and pool.workers == 2
    cluster = make_executor(2, 1, "tcp://127.0.0.1:1")
    assert cluster.description.startswith("Dask cluster at tcp://127.0.0.1:1")


@pytest.mark.slow
@pytest.mark.cluster
def test_a_local_two_worker_dask_cluster_caches_what_the_local_pool_caches(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed", reason=CLUSTER_EXTRA_HINT)
    mapping = bench_mapping(tmp_path)
    local = parse_bench_config(
        mapping | {"workers": 2, "cache_dir": str(tmp_path / "pool-cache"), "output": str(tmp_path / "pool")}
    )
    run_bench(local)
    on_cluster = parse_bench_config(
        mapping | {"workers": 2, "cache_dir": str(tmp_path / "dask-cache"), "output": str(tmp_path / "dask")}
    )
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            protocol="tcp",
        ) as cluster,
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread,
    ):
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        # Bounded: the run must finish within the limit; the cluster is closed by the context manager either way.
        thread.submit(run_bench, on_cluster, None, "python -m bench tiny.yaml --cluster", address).result(
            timeout=CLUSTER_TIMEOUT_S
        )
        with distributed.Client(address, set_as_default=False) as client:
            assert len(client.scheduler_info()["workers"]) == 2
    pool_entries, dask_entries = cache_entries(local.cache_dir), cache_entries(on_cluster.cache_dir)
    assert len([name for name in pool_entries if name.startswith("runs")]) >= 5
    assert any(name.startswith("source") for name in pool_entries)
    assert dask_entries == pool_entries  # same keys, same Dice curves, clicks, versions and forgetting
    meta = json.loads((on_cluster.output / "bench.json").read_text(encoding="utf-8"))
    assert meta["missing"] == [] and meta["failed"] == []


def test_an_unreachable_cluster_fails_with_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("distributed", reason=CLUSTER_EXTRA_HINT)
    executor = make_executor(1, 1, "tcp://127.0.0.1:9")  # the discard port: nothing listens there
    executor.connect_timeout_s = 2.0  # type: ignore[attr-defined]
    with pytest.raises(OSError):
        list(executor.run([(dict, ())]))


def _torch_threads() -> dict[str, Any]:
    return {"threads": torch.get_num_threads()}


def test_the_in_process_executor_runs_each_task_with_the_configured_torch_threads() -> None:
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    try:
        outcomes = [outcome() for _, outcome in InProcessExecutor(wanted).run([(_torch_threads, ())] * 2)]
    finally:
        torch.set_num_threads(before)
    assert outcomes == [{"threads": wanted}, {"threads": wanted}]
