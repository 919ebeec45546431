"""Peak memory and answer time of a real ``clickadapt serve`` for decompression bombs and large legitimate uploads.

Each file is uploaded to a fresh server process (``python -m clickadapt.server`` on 127.0.0.1, a free port,
a temporary store); the server's peak resident memory (``VmHWM`` of ``/proc/<pid>/status``) is read after
the answer, so every row is the peak of one start-up plus one upload. Bounded: one upload per file, each
with a 120 s timeout; only loopback is contacted.

    .venv/bin/python bench/upload_limits.py [--model brain] [--out bench/results/upload_limits.md]
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import tifffile
from PIL import Image

MB = 1024 * 1024


def vm_kib(pid: int, field: str) -> int:
    """A ``Vm*`` field of ``/proc/<pid>/status`` in KiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def gzip_stream(parts: Iterator[bytes]) -> bytes:
    """Gzip a stream of byte chunks without holding the uncompressed whole."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [compressor.compress(part) for part in parts]
    out.append(compressor.flush())
    return b"".join(out)


def nifti_gz(shape: tuple[int, int, int], dtype: type, fill: float = 0.0) -> bytes:
    """A gzipped NIfTI of ``shape`` holding ``fill`` everywhere, built slice by slice."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    plane = np.full(shape[:2], fill, dtype=dtype).tobytes(order="F")

    def parts() -> Iterator[bytes]:
        yield header.binaryblock + b"\x00" * 4
        for _ in range(shape[2]):
            yield plane

    return gzip_stream(parts())


def files() -> Iterator[tuple[str, str, bytes]]:
    """(name, what it is, bytes) of every measured upload, made on the fly."""
    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, format="PNG", compress_level=9)
    yield "bomb-12000x12000.png", "PNG bomb (12000 × 12000 grey)", buffer.getvalue()
    yield "bomb-600cubed.nii.gz", "NIfTI bomb (600³ uint8, gzipped)", nifti_gz((600, 600, 600), np.uint8)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((16000, 16000), np.uint8), compression="zlib", compressionargs={"level": 9})
    yield "bomb-16000x16000.tif", "TIFF bomb (16000 × 16000 grey)", buffer.getvalue()
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 4000, size=(256, 256, 500), dtype=np.int16)
    yield (
        "noise-256x256x500.nii",
        "64 MB NIfTI, int16 noise (uncompressed)",
        nib.Nifti1Image(volume, np.eye(4)).to_bytes(),
    )
    del volume
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(4096, 4096, 3), dtype=np.uint8)).save(buffer, format="PNG")
    yield "noise-4096x4096.png", "4096 × 4096 RGB PNG, noise (≈ 48 MB)", buffer.getvalue()
    yield (
        "flat-512cubed.nii.gz",
        "512³ float32 NIfTI, gzipped (the largest default volume)",
        nifti_gz((512, 512, 512), np.float32, 1.0),
    )


def measure(model: str, name: str, payload: bytes) -> tuple[int, str, float, int, int]:
    """Upload to a fresh server: (status, detail, seconds, baseline VmHWM KiB, VmHWM KiB after)."""
    with tempfile.TemporaryDirectory() as store:
        command = [sys.executable, "-m", "clickadapt.server", "--port", "0", "--model", model, "--store", store]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert process.stdout is not None
            url = ""
            for line in process.stdout:
                found = re.search(r"open (http://\S+)", line)
                if found:
                    url = found.group(1)
                    break
            if not url:
                raise RuntimeError(f"server did not start for {name}")
            baseline = vm_kib(process.pid, "VmHWM")
            started = time.perf_counter()
            with httpx.Client(base_url=url, timeout=120) as client:
                answer = client.post(f"/api/uploads?filename={name}", content=payload)
            seconds = time.perf_counter() - started
            peak = vm_kib(process.pid, "VmHWM")
            detail = answer.json().get("detail", "") if answer.status_code >= 400 else "accepted"
            return answer.status_code, str(detail), seconds, baseline, peak
        finally:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    """Measure every file and write the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="brain", help="model of the server (default the shipped brain model)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/upload_limits.md"))
    args = parser.parse_args()
    rows = []
    for name, what, payload in files():
        status, detail, seconds, baseline, peak = measure(args.model, name, payload)
        rows.append(
            f"| {what} | {len(payload) / MB:.2f} MB | {status} | {seconds:.2f} s | {baseline / 1024:.0f} MB | "
            f"{peak / 1024:.0f} MB | {detail[:110]} |"
        )
        print(rows[-1], flush=True)
    table = [
        "| upload | file size | answer | time | server peak before | server peak after | message |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    args.out.write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
