"""A crash mid-session (SIGKILL) and a restart: the clicks, the masks and the model version are all there."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from server_helpers import ServerProcess, synthetic_brain_slice


def write_data_folder(folder: Path, count: int = 2) -> None:
    folder.mkdir(parents=True)
    for index in range(count):
        image, _ = synthetic_brain_slice(48, seed=index)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"case{index}.png")


@pytest.mark.slow
def test_restart_resumes_clicks_masks_and_model_version(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    write_data_folder(data)
    arguments = ["--model", str(tiny_checkpoint), "--store", str(store), "--data", str(data), "--strategy", "oaims"]
    server = ServerProcess(arguments)
    url = server.start()
    headers = {"X-Client-Id": "tab-restart"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            finished_id, open_id = (image["id"] for image in client.get("/api/images").json())
            client.post(f"/api/images/{finished_id}/clicks", json={"row": 24, "col": 24, "label": 1})
            finished = client.post(f"/api/images/{finished_id}/finish").json()
            final_before = client.get(f"/api/images/{finished_id}/mask.png?tag=final").content
            for row, col, label in [(24, 24, 1), (30, 20, 1), (5, 5, 0)]:
                view = client.post(f"/api/images/{open_id}/clicks", json={"row": row, "col": col, "label": label})
                assert view.status_code == 200, view.text
            before = view.json()
            mask_before = client.get(f"/api/images/{open_id}/mask.png").content
            # The autosave is written in the background after the answer; a crash before it is on disk would
            # lose the last clicks' weight updates (not the clicks), so crash once it has been written.
            deadline = time.monotonic() + 30
            model_before = client.get("/api/model").json()
            while model_before["autosaved_version"] != before["model_version"] and time.monotonic() < deadline:
                time.sleep(0.05)
                model_before = client.get("/api/model").json()
    finally:
        server.kill()
    assert before["model_version"] > finished["model_version"]  # Mid-Interaction updates after the last save

    restarted = ServerProcess(arguments)
    url = restarted.start()
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            statuses = {image["id"]: (image["status"], image["clicks"]) for image in client.get("/api/images").json()}
            assert statuses == {finished_id: ("done", 1), open_id: ("in_progress", 3)}
            model_after = client.get("/api/model").json()
            assert model_after["version"] == model_before["version"] == before["model_version"]
            assert model_after["versions"] == model_before["versions"]
            assert model_after["autosaved_version"] == before["model_version"]
            resumed = client.post(f"/api/images/{open_id}/open").json()
            assert resumed["clicks"] == before["clicks"]  # positions, classes, versions and timings
            assert resumed["mask_model_version"] == before["mask_model_version"]
            # The restored weights reproduce the mask that was on screen before the crash.
            assert client.get(f"/api/images/{open_id}/mask.png").content == mask_before
            assert client.get(f"/api/images/{finished_id}/mask.png?tag=final").content == final_before
            assert client.post(f"/api/images/{finished_id}/finish").status_code == 409
            # Labelling goes on where it stopped.
            more = client.post(f"/api/images/{open_id}/clicks", json={"row": 40, "col": 40, "label": 0}).json()
            assert len(more["clicks"]) == 4 and more["model_version"] > before["model_version"]
            done = client.post(f"/api/images/{open_id}/finish").json()
            assert done["state"] == "done" and done["image"]["clicks"] == 4
            chart = client.get("/api/stats/chart").json()
            assert [point["clicks"] for point in chart] == [1, 4]
    finally:
        restarted.stop()
