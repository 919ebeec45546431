"""The benchmark harness of clickadapt and its scripts (not part of the installed package).

Run from the repository root: ``python -m bench CONFIG`` runs the benchmark suite (:mod:`bench.harness`);
the other modules (``python -m bench.latency``, ``python -m bench.long_stream``, …) describe themselves in
their docstrings. The package ``clickadapt`` never imports from here (``tests/bench/test_boundary.py``).
"""
