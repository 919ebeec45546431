"""Per-click latency of the interactive session and the HTTP API; writes bench/results/latency.md.

Usage, from the repository root: ``python bench/latency.py [--device cpu] [--stream-limit N]`` (or
``python -m bench.latency``; ``--help`` lists the options). The harness is the package :mod:`bench.speed`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable for `bench.speed`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.speed.cli import main

if __name__ == "__main__":
    sys.exit(main())
