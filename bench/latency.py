"""Per-click latency of the interactive session and the HTTP API; writes bench/results/latency.md.

Usage: ``python bench/latency.py [--device cpu] [--stream-limit N]`` (same as ``clickadapt bench-latency``).
See :mod:`clickadapt.evaluation.latency`.
"""

from __future__ import annotations

import sys

from clickadapt.evaluation.latency import main

if __name__ == "__main__":
    sys.exit(main())
