"""Where the plan's runs are computed: in this process, in a local process pool, or on a Dask cluster.

An executor takes a list of *tasks* — ``(function, arguments)`` pairs whose function is importable by name in
the worker (``bench.harness.execution.compute_run`` …) — and yields them back as they finish, each as a
zero-argument callable that returns the task's result or raises its exception. The caller (the execution step)
writes every result to the run cache on *its* machine, so the workers need no shared file system for the
cache; they do need the repository (the ``bench`` package on their path, run from the repository root), the
same Python environment, and the models and data at the same paths as the client.

Why Dask distributed for the cluster (and not Ray): it is pure Python (``dask`` and ``distributed`` wheels of
about 2.5 MB, plus small dependencies), installs from the package index like the rest of the project, and its
scheduler and workers are started with one command each (``dask scheduler``; ``dask worker ADDRESS
--nthreads 1``); Ray is one 79 MB binary wheel per platform with its own object store and dashboard, far more
than independent CPU-bound runs with small JSON results need. It is an optional extra:
``pip install -e ".[cluster]"``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch

logger = logging.getLogger(__name__)

Task = tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]
"""``(function, arguments)`` of one computation; the function must be importable by name in a worker."""
Outcome = Callable[[], dict[str, Any]]
"""Returns a finished task's result, or raises its exception."""

CLUSTER_EXTRA_HINT = 'the cluster executor needs the optional extra: pip install -e ".[cluster]" (dask, distributed)'


def set_worker_threads(threads: int) -> None:
    """Initialise a worker process: ``threads`` torch threads, warnings-only logging."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)


def call_with_threads(threads: int, function: Callable[..., dict[str, Any]], *arguments: Any) -> dict[str, Any]:
    """Run ``function(*arguments)`` with ``threads`` torch threads (a cluster worker has no initialiser hook)."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return function(*arguments)


class Executor(Protocol):
    """Computes tasks; see the module docstring."""

    @property
    def description(self) -> str:
        """What computes the tasks, for the log (``local pool of 2 processes``)."""
        ...

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Outcome]]:
        """Submit every task (in the given order: the longest first) and yield ``(index, outcome)`` pairs as the
        tasks finish."""
        ...


class InProcessExecutor:
    """Runs the tasks one after the other in this process (``workers: 1``), each with ``threads`` torch threads.

    Without the thread setting a run here would take torch's default (one thread per core): two such
    invocations side by side oversubscribe the cores, and OpenMP's spinning threads then waste most of the CPU.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads

    @property
    def description(self) -> str:
        """See :class:`Executor`."""
        return f"this process × {self.threads} torch thread(s)"

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Outcome]]:
        """Yield each task unstarted: it runs, with :attr:`threads` torch threads, when its outcome is called."""
        for index, (function, arguments) in enumerate(tasks):
            yield index, functools.partial(call_with_threads, self.threads, function, *arguments)


class LocalPoolExecutor:
    """A pool of ``workers`` spawned processes on this machine, each with ``threads`` torch threads (the default)."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers = workers
        self.threads = threads

    @property
    def description(self) -> str:
        """See :class:`Executor`."""
        return f"local pool of {self.workers} processes × {self.threads} torch thread(s)"

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Outcome]]:
        """See :class:`Executor`."""
        if not tasks:
            return
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=context, initializer=set_worker_threads, initargs=(self.threads,)
        ) as pool:
            futures = {pool.submit(function, *arguments): index for index, (function, arguments) in enumerate(tasks)}
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result


class DaskExecutor:
    """The workers of a running Dask distributed cluster (``--cluster tcp://HOST:8786``).

    Tasks are submitted with decreasing priority in the given order (the longest first) and never retried: a run
    that fails (or whose worker died) is reported as failed, like in the local pool, and is computed by the next
    invocation.
    """

    def __init__(self, address: str, threads: int, connect_timeout_s: float = 30.0) -> None:
        self.address = address
        self.threads = threads
        self.connect_timeout_s = connect_timeout_s

    @property
    def description(self) -> str:
        """See :class:`Executor`."""
        return f"Dask cluster at {self.address} ({self.threads} torch thread(s) per task)"

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Outcome]]:
        """See :class:`Executor`."""
        if not tasks:
            return
        try:
            import distributed
        except ImportError as error:  # an optional extra
            raise RuntimeError(CLUSTER_EXTRA_HINT) from error
        with distributed.Client(self.address, timeout=self.connect_timeout_s, set_as_default=False) as client:
            logger.info("cluster %s: %d worker(s)", self.address, len(client.scheduler_info().get("workers", {})))
            futures = {
                client.submit(
                    call_with_threads, self.threads, function, *arguments, pure=False, priority=len(tasks) - index
                ): index
                for index, (function, arguments) in enumerate(tasks)
            }
            for future in distributed.as_completed(list(futures), loop=client.loop):
                yield futures[future], future.result


def make_executor(workers: int, threads: int, cluster: str | None = None) -> Executor:
    """The executor of a bench invocation.

    Args:
        workers: Local worker processes (1 = compute in this process); ignored with a cluster.
        threads: Torch threads per worker (per task on a cluster).
        cluster: Address of a Dask distributed scheduler (``tcp://HOST:8786``); ``None`` = this machine.
    """
    if cluster is not None:
        return DaskExecutor(cluster, threads)
    if workers <= 1:
        return InProcessExecutor(threads)
    return LocalPoolExecutor(workers, threads)
