"""Drive the clickadapt web application through its REST API with httpx.

Start a server first (``clickadapt serve``), then::

    python docs/api_example.py                          # http://127.0.0.1:8000/
    python docs/api_example.py http://host:8000/ --token TOKEN

It opens the first image that is not done, clicks twice, undoes and redoes a click, finishes the image
(the model adapts and saves a new version), exports the mask as PNG and NIfTI, and prints the model's
versions. The full API, with every field explained, is at ``<address>/docs``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx


def main() -> None:
    """Run the example against a running server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8000/")
    parser.add_argument("--token", help="access token, when the server has one")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the exported masks")
    args = parser.parse_args()

    headers = {"X-Client-Id": "api-example"}  # your own image state, apart from the browser tabs
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    with httpx.Client(base_url=args.url, headers=headers, timeout=60) as api:
        info = api.get("/api/info").raise_for_status().json()
        print(f"task {info['task']}, classes {info['class_names']}, model version {info['model']['version']}")

        image = api.get("/api/images/next").raise_for_status().json()["image"]
        if image is None:
            print("every image is done")
            return
        image_id = image["id"]
        view = api.post(f"/api/images/{image_id}/open").raise_for_status().json()
        height, width = view["image"]["height"], view["image"]["width"]
        print(f"opened {image['name']} ({height}×{width}), {len(view['clicks'])} clicks so far")

        # A click of class 1 (lesion / rim) in the middle, then a background click near a corner.
        for row, col, label in [(height // 2, width // 2, 1), (height // 8, width // 8, "background")]:
            view = api.post(f"/api/images/{image_id}/clicks", json={"row": row, "col": col, "label": label})
            view = view.raise_for_status().json()
            print(
                f"click {len(view['clicks'])}: mask by model version {view['mask_model_version']}, "
                f"{view['last_click_s']:.3f} s"
            )

        view = api.post(f"/api/images/{image_id}/undo").raise_for_status().json()
        print(f"undo: {len(view['clicks'])} click left, weights restored: {view['weights_restored']}")
        api.post(f"/api/images/{image_id}/clicks", json={"row": height // 8, "col": width // 8, "label": 0})

        # Bad input gets a 4xx answer with a clear message and changes nothing.
        refused = api.post(f"/api/images/{image_id}/clicks", json={"row": height, "col": 0, "label": 1})
        print(f"refused with {refused.status_code}: {refused.json()['detail']}")

        view = api.post(f"/api/images/{image_id}/finish").raise_for_status().json()
        print(f"finished: {view['message']}")

        for file_format in ("png", "nifti"):
            exported = api.get(f"/api/images/{image_id}/export", params={"format": file_format, "tag": "final"})
            name = exported.raise_for_status().headers["content-disposition"].split('filename="')[1].rstrip('"')
            (args.out / name).write_bytes(exported.content)
            print(f"exported {args.out / name}")

        model = api.get("/api/model").raise_for_status().json()
        saved = ", ".join(f"v{version['version']} ({version['kind']})" for version in model["versions"])
        print(f"model version {model['version']} with strategy {model['strategy']}; saved: {saved}")
        # To go back: api.post("/api/model/rollback", json={"version": 0}) — recorded as a new version.


if __name__ == "__main__":
    main()
