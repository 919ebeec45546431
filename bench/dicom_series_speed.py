"""How long reading a DICOM series takes: finding it among a folder's files, then stacking it into a volume.

Writes three real series into a temporary folder with the tests' DICOM writer (``tests/dicom_testing.py``: one
Part 10 file per slice, uint16 with rescale, the geometry a scanner writes) and times
:func:`clickadapt.volumes.dicom.find_dicom_series` (headers only) and
:func:`~clickadapt.volumes.dicom.read_dicom_series` (pixels, checks, affine), best of ``--repeats``:

- MSLUB patient07's whole FLAIR (182 × 218 × 182), uncompressed;
- the same files re-encoded as JPEG lossless (through GDCM);
- a 512 × 512 × 200 series of random values (a CT-sized stack);
- a data folder of 50 series of 200 small slices (10,000 files), as a server's data folder may hold.

Each series is also found again with a :class:`~clickadapt.volumes.dicom.SliceHeaderCache` loaded from the file a
first scan wrote (what a restart of the web server does): only the files' sizes and times are looked at.

Usage: ``python bench/dicom_series_speed.py`` (writes ``bench/results/dicom_series_speed.md``; needs
``../shared/data``).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' DICOM writer

from clickadapt.paths import default_data_root  # noqa: E402
from clickadapt.volumes.dicom import SliceHeaderCache, find_dicom_series, read_dicom_series  # noqa: E402
from dicom_testing import JPEG_LOSSLESS, quantised, transcode, write_dicom_series  # noqa: E402

MSLUB_FLAIR = (
    "brain/mslub/cross_sectional/MNI/patient07/FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
)
OUTPUT = ROOT / "bench" / "results" / "dicom_series_speed.md"
T = TypeVar("T")


def _best(action: Callable[[], T], repeats: int) -> tuple[float, T]:
    """The fastest of ``repeats`` runs of ``action`` (seconds) and its last result."""
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = action()
        timings.append(time.perf_counter() - start)
    return min(timings), result


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _find_with_cache(files: list[Path], cache_file: Path) -> object:
    """Find the series among ``files`` with the header cache in ``cache_file`` (loaded afresh, as at a restart)."""
    return find_dicom_series(files, SliceHeaderCache(cache_file))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timings per series (the best is kept)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    flair = quantised(nib.load(str(default_data_root() / MSLUB_FLAIR)))
    stack = np.random.default_rng(0).normal(500, 100, (512, 512, 200)).astype(np.float32)
    cases = [
        ("MSLUB patient07 FLAIR, 182 × 218 × 182", flair, False),
        ("the same, JPEG lossless", flair, True),
        ("random 512 × 512 × 200", nib.Nifti1Image(stack, np.diag([0.5, 0.5, 1.0, 1.0])), False),
    ]
    small = nib.Nifti1Image(np.random.default_rng(1).normal(500, 100, (64, 64, 200)).astype(np.float32), np.eye(4))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, image, packed) in enumerate([*cases, ("50 series of 64 × 64 × 200", small, False)]):
            many = index == len(cases)
            files = [
                path
                for series in range(50 if many else 1)
                for path in write_dicom_series(image, Path(folder) / str(index) / str(series))
            ]
            if packed:
                for path in files:
                    transcode(path, JPEG_LOSSLESS)
            megabytes = sum(path.stat().st_size for path in files) / 1e6
            slices = sorted(path for path in (Path(folder) / str(index)).rglob("*") if path.is_file())
            find_s, found = _best(functools.partial(find_dicom_series, slices), args.repeats)
            cache_file = Path(folder) / f"headers-{index}.json"
            first = SliceHeaderCache(cache_file)
            find_dicom_series(slices, first)
            first.save()
            cached_s, _ = _best(functools.partial(_find_with_cache, slices, cache_file), args.repeats)
            read_s, _ = _best(functools.partial(read_dicom_series, found[0]), args.repeats)
            rows.append(
                f"| {name} | {len(files)} | {megabytes:.1f} | {1000 * find_s:.0f} | {1000 * cached_s:.0f} | "
                f"{1000 * read_s:.0f}{' (one series)' if many else ''} |"
            )
            print(rows[-1], flush=True)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    text = (
        f"""# Reading a DICOM series

- Command: `python bench/dicom_series_speed.py` (best of {args.repeats})
- Date: {datetime.now(UTC).isoformat(timespec="seconds")}
- Machine: {_cpu_name()}, {os.cpu_count()} CPUs; load average {load} at the end

*find*: grouping the folder's files into series (headers only); *find, cached*: the same with the header cache a
first scan wrote, loaded from its file (a web-server restart on an unchanged data folder); *read*: stacking the
series into a volume (pixels, geometry checks, affine; the headers kept from *find*).

| series | files | MB | find ms | find, cached ms | read ms |
|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
