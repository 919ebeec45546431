"""Four simulated clients clicking and finishing against a real ``clickadapt serve`` for 60 s (issue 16).

Each client (its own ``X-Client-Id``) labels its own share of the demo images: three clicks, then finish,
image after image, until the time is up or its images are done. Bounded (duration, images) and loopback
only. At the end every image's stored clicks are compared with the clicks the server acknowledged: none
may be lost. Prints p50 / p95 / max click latency (seconds, client side, under load).

    .venv/bin/python bench/load_clients.py [--clients 4] [--seconds 60] [--model brain]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np


def main() -> int:
    """Run the load and print the summary; exit status 1 if a click was lost or refused."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clicks", type=int, default=3, help="clicks per image before finishing")
    parser.add_argument("--model", default="brain")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        command = [sys.executable, "-m", "clickadapt.server", "--port", "0", "--model", args.model, "--store", store]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert server.stdout is not None
            url = next(m.group(1) for line in server.stdout if (m := re.search(r"open (http://\S+)", line)))
            return run_load(url, args)
        finally:
            server.terminate()
            server.wait(timeout=30)


def run_load(url: str, args: argparse.Namespace) -> int:
    """Drive the clients against ``url``; returns the exit status."""
    with httpx.Client(base_url=url, timeout=120) as probe:
        images = [image["id"] for image in probe.get("/api/images").json()]
    latencies: list[float] = []
    acknowledged: dict[str, int] = {}
    failures: list[str] = []
    finished: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def client(index: int) -> None:
        rng = np.random.default_rng(index)
        with httpx.Client(base_url=url, timeout=120, headers={"X-Client-Id": f"load-{index}"}) as http:
            for image_id in images[index :: args.clients]:
                for _ in range(args.clicks):
                    if time.monotonic() > deadline:
                        return
                    row, col = (int(v) for v in rng.integers(60, 196, size=2))
                    started = time.perf_counter()
                    answer = http.post(
                        f"/api/images/{image_id}/clicks",
                        json={"row": row, "col": col, "label": int(rng.integers(0, 2))},
                    )
                    elapsed = time.perf_counter() - started
                    with lock:
                        if answer.status_code == 200:
                            latencies.append(elapsed)
                            acknowledged[image_id] = acknowledged.get(image_id, 0) + 1
                        else:
                            failures.append(f"click {image_id}: {answer.status_code} {answer.text[:100]}")
                if time.monotonic() > deadline:
                    return
                answer = http.post(f"/api/images/{image_id}/finish")
                with lock:
                    if answer.status_code == 200:
                        finished.append(image_id)
                    else:
                        failures.append(f"finish {image_id}: {answer.status_code} {answer.text[:100]}")

    threads = [threading.Thread(target=client, args=(index,)) for index in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lost = []
    with httpx.Client(base_url=url, timeout=120) as probe:
        for image_id, count in acknowledged.items():
            stored = len(probe.get(f"/api/images/{image_id}/session").json()["clicks"])
            if stored != count:
                lost.append(f"{image_id}: {count} acknowledged, {stored} stored")
    values = np.asarray(latencies)
    print(
        f"clients {args.clients}, {args.seconds:.0f} s: {len(latencies)} clicks, {len(finished)} images finished, "
        f"{len(failures)} refused, {len(lost)} images with lost clicks"
    )
    if len(values):
        p50, p95 = np.percentile(values, [50, 95])
        print(f"click latency p50 {p50:.3f} s, p95 {p95:.3f} s, max {values.max():.3f} s")
    for line in failures + lost:
        print("  " + line)
    return 1 if failures or lost else 0


if __name__ == "__main__":
    sys.exit(main())
