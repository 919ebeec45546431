"""Memory of this and other processes, and the machine a latency measurement ran on (with its load)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

from clickadapt.evaluation.machine import cpu_and_versions


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, because ``getrusage``'s ``ru_maxrss`` carries the parent's
    peak over into a process started by fork + exec (a spawned worker would report at least its parent's
    peak). Elsewhere ``getrusage`` (KiB on Linux, bytes on macOS).
    """
    high_water = process_peak_rss_mb(os.getpid())
    if high_water is not None:
        return high_water
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def current_rss_mb() -> float | None:
    """Current resident memory of this process in MiB (Linux ``/proc``; ``None`` elsewhere)."""
    statm = Path("/proc/self/statm")
    if not statm.is_file():
        return None
    pages = int(statm.read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


def process_peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory (``VmHWM``) of another process in MiB (Linux only)."""
    status = Path(f"/proc/{pid}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def machine_description(device: str) -> dict[str, str]:
    """CPU model and cores (``lscpu``), torch version, device, load and the date, for the report."""
    info = cpu_and_versions()
    info["cores"] = info.pop("cpus")
    info["device"] = device
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    info["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    info["load"] = load_description()
    return info


def load_description() -> str:
    """Load averages and whether a training job runs (the machine is shared)."""
    try:
        one, five, fifteen = os.getloadavg()
        load = f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"
    except OSError:
        load = "unknown"
    training = "unknown"
    try:
        found = subprocess.run(["pgrep", "-f", "clickadapt train"], capture_output=True, text=True, check=False)
        training = "yes" if found.stdout.strip() else "no"
    except OSError:
        pass
    return f"load average {load}; `clickadapt train` running: {training}"
