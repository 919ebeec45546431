"""Issue 17: MONAI Label point lists across a server restart, and points deleted in the middle of the list.

Driven like ``test_monailabel_client.py``: MONAI Label's own ``MONAILabelClient`` against real
``clickadapt serve`` subprocesses on loopback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest
from monailabel.client.client import MONAILabelClient  # make test installs it
from server_helpers import ServerProcess
from tests.volumes.volume_testing import write_oblique_volume

pytestmark = pytest.mark.slow
K = 20  # the slice clicked most
OTHER = 22  # another slice


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An oblique, non-RAS (S, P, L) test volume of shape (24, 36, 40)."""
    path, _lesion = write_oblique_volume(tmp_path_factory.mktemp("volume"))
    return path


def start(arguments: list[str], tmp_path: Path) -> tuple[ServerProcess, Any, str]:
    process = ServerProcess(arguments)
    url = process.start().rstrip("/")
    return process, MONAILabelClient(url, tmpdir=str(tmp_path), client_id="slicer-test"), url


def infer(client: Any, image: str, foreground: list[list[int]], background: list[list[int]], **extra: Any) -> Any:
    path, params = client.infer("clickadapt_2d", image, {"foreground": foreground, "background": background, **extra})
    return np.asarray(nib.load(str(path)).dataobj), params


def stored_clicks(url: str, image_id: str) -> list[tuple[int, int, int]]:
    """The clicks in force of a datastore image's session (model grid)."""
    response = httpx.get(f"{url}/api/images/{image_id}/session", timeout=60)
    assert response.status_code == 200, response.text
    return [(click["row"], click["col"], click["label"]) for click in response.json()["clicks"]]


def model_version(client: Any) -> int:
    return int(client.train_status()["result"]["model_version"])


def test_restart_restores_stored_clicks_without_applying_them_again(
    tiny_checkpoint: Path, volume: Path, tmp_path: Path
) -> None:
    arguments = ["--model", str(tiny_checkpoint), "--store", str(tmp_path / "store"), "--strategy", "oaims"]
    first, second, new = [12, 18, OTHER], [12, 18, K], [12, 16, K]
    background = [[10, 20, K]]
    process, client, _url = start(arguments, tmp_path)
    try:
        client.upload_image(str(volume), "case")
        infer(client, "case", [first], [], slice=OTHER)
        infer(client, "case", [first, second], [], slice=K)
        _label, before = infer(client, "case", [first, second], background, slice=K)
        assert before["new_clicks"] == 1 and before["clicks"] == 3
    finally:
        process.stop()
    version_before_restart = before["model_version"]

    process, client, url = start(arguments, tmp_path)
    try:
        assert model_version(client) == version_before_restart  # the autosaved weights came back
        # The client re-posts its whole list (one more point on the slice it is editing).
        _label, after = infer(client, "case", [first, second, new], background, slice=K)
        assert after["restored_clicks"] == 3
        assert after["new_clicks"] == 1 and after["undone_clicks"] == 0 and after["clicks"] == 4
        assert after["model_version"] - version_before_restart <= 1  # at most the new click's update
        assert len(stored_clicks(url, f"ml-case-a2-s{K}")) == 3  # second, background, new: no duplicate
        assert len(stored_clicks(url, f"ml-case-a2-s{OTHER}")) == 1

        # Deleting a restored point: its update cannot be taken back (no snapshot survives a restart), the
        # later point is applied again and the datastore follows.
        _label, removal = infer(client, "case", [first, second, new], [], slice=K)
        assert removal["undone_clicks"] == 1 and removal["new_clicks"] == 0 and removal["reapplied_clicks"] == 1
        (removed,) = removal["removed"]
        assert removed["voxel"] == background[0] and removed["label"] == 0
        assert removed["weights_restored"] is False
        assert "restart" in removed["reason"] or "did not change" in removed["reason"]
        assert len(stored_clicks(url, f"ml-case-a2-s{K}")) == 2
        assert removal["clicks"] == 3
    finally:
        process.stop()


def test_removing_a_middle_point_is_as_if_it_was_never_clicked(
    tiny_checkpoint: Path, volume: Path, tmp_path: Path
) -> None:
    """On a frozen model the label after the removal is exactly a fresh session's with the remaining points."""
    arguments = ["--model", str(tiny_checkpoint), "--store", str(tmp_path / "store"), "--no-adaptation"]
    a, b, c = [12, 18, K], [10, 20, K], [14, 16, K]
    process, client, url = start(arguments, tmp_path)
    try:
        client.upload_image(str(volume), "case")
        client.upload_image(str(volume), "fresh")
        infer(client, "case", [a], [], slice=K)
        _label, with_b = infer(client, "case", [a], [b], slice=K)
        clicked, _params = infer(client, "case", [a, c], [b], slice=K)

        # Open slice: b (the middle click) is deleted; c is applied again after it.
        label, params = infer(client, "case", [a, c], [], slice=K)
        assert params["undone_clicks"] == 1 and params["reapplied_clicks"] == 1 and params["new_clicks"] == 0
        (removed,) = params["removed"]
        assert removed["voxel"] == b and removed["label"] == 0 and isinstance(removed["reason"], str)
        assert params["clicks"] == 2
        infer(client, "fresh", [a], [], slice=K)
        fresh, _params = infer(client, "fresh", [a, c], [], slice=K)
        assert np.array_equal(label, fresh)
        assert not np.array_equal(clicked, fresh)  # b did change the label: the removal is visible
        assert stored_clicks(url, f"ml-case-a2-s{K}") == stored_clicks(url, f"ml-fresh-a2-s{K}")
        assert len(stored_clicks(url, f"ml-case-a2-s{K}")) == 2

        # Closed slice: after a click on another slice, slice K is no longer open; deleting a there keeps the
        # later clicks (c), recomputes slice K and leaves the other slice alone.
        other, _params = infer(client, "case", [a, c, [12, 18, OTHER]], [], slice=OTHER)
        label, params = infer(client, "case", [c], [], slice=K)
        assert params["undone_clicks"] == 1 and params["reapplied_clicks"] == 0
        (removed,) = params["removed"]
        assert removed["voxel"] == a and removed["weights_restored"] is False and "accepted" in removed["reason"]
        assert params["clicks"] == 2
        client.upload_image(str(volume), "only-c")
        only_c, _params = infer(client, "only-c", [c], [], slice=K)
        assert np.array_equal(label[:, :, K], only_c[:, :, K])
        assert stored_clicks(url, f"ml-case-a2-s{K}") == stored_clicks(url, f"ml-only-c-a2-s{K}")
        path, params = client.infer("clickadapt_3d", "case", {"foreground": [c, [12, 18, OTHER]], "background": []})
        label_3d = np.asarray(nib.load(str(path)).dataobj)
        assert params["undone_clicks"] == 0 and params["new_clicks"] == 0
        assert np.array_equal(label_3d[:, :, OTHER], other[:, :, OTHER])  # the other slice kept its plane
        assert len(stored_clicks(url, f"ml-case-a2-s{OTHER}")) == 1
        assert with_b["clicks"] == 2
    finally:
        process.stop()
