"""What machine a measurement ran on, for the benchmark and latency reports."""

from __future__ import annotations

import os
import platform
import subprocess

import torch


def cpu_and_versions() -> dict[str, str]:
    """CPU model and logical CPUs (from ``lscpu`` where available), torch and Python versions.

    Keys: ``cpu``, ``cpus``, ``torch``, ``python``.
    """
    info = {"cpu": platform.processor() or platform.machine(), "cpus": str(os.cpu_count())}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", info["cpu"]).strip()
        info["cpus"] = fields.get("CPU(s)", info["cpus"]).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    info["torch"] = torch.__version__
    info["python"] = platform.python_version()
    return info
