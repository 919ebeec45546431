"""Click latency: how long a person waits after each click, measured on a real stream.

A simulated user drives :class:`~clickadapt.adaptation.session.InteractiveSession` over a real target
stream through the package's one click loop (:func:`clickadapt.evaluation.stream.click_through`, as in
``clickadapt evaluate``); every ``add_click`` (click → mask on screen) and every ``finish`` (the
Post-Interaction update) is timed by the wall clock:

- brain at 256×256: BRATS test patients' T1c slices (the demo slices when the data folder is absent);
  the shipped brain network runs at 128×128 inside (:class:`~clickadapt.models.resized.ResizedInputNetwork`);
- fundus at 256×256 (the shipped model's input size): RIM-ONE r1 test images.

Per (task, strategy, variant) it reports the click-to-mask median and 95th percentile (for ``oaims``
separately for the first click and for the Mid-Interaction clicks 2..T), the MI update alone, the PI
finish, the peak resident memory and the Dice after clicks 1, 5 and T, so that every speed-up is shown
beside the quality it keeps. Each measurement runs in a fresh process (its peak memory is its own). The
same stream is then sent through the HTTP API of a real ``clickadapt serve`` subprocess. A CPU-tuning
table (threads, naive vs reused forward, undo snapshots, ``channels_last``, bf16 autocast, optionally
``torch.compile``) and a backbone table (widths) complete ``bench/results/latency.md``.

Modules, one concern each:

- :mod:`bench.speed.settings`: what is measured (settings, run specs, streams, targets);
- :mod:`bench.speed.results`: what a measurement returns, and its statistics;
- :mod:`bench.speed.machine`: memory of this and other processes, the machine and its load;
- :mod:`bench.speed.network`: the network variants, single-forward probes and ``torch.compile``;
- :mod:`bench.speed.in_process`: a stream through ``InteractiveSession`` in this (or a fresh) process;
- :mod:`bench.speed.http_api`: the same stream through a ``clickadapt serve`` subprocess;
- :mod:`bench.speed.benchmark`: the streams and the whole benchmark;
- :mod:`bench.speed.report`: the Markdown report;
- :mod:`bench.speed.cli`: the command line of ``bench/latency.py``.

Reproduce from the repository root: ``python bench/latency.py`` (or ``python -m bench.latency``);
``--device cuda`` on a GPU.
"""
