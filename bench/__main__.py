"""``python -m bench CONFIG``: run the benchmark suite (see :mod:`bench.harness`)."""

from __future__ import annotations

import sys

from bench.harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
