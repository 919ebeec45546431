"""MONAI Label-compatible endpoints: what 3D Slicer's MONAILabel module (and ``MONAILabelClient``) calls.

Served: ``/info/``, ``/auth/`` and ``/auth/token`` (the access token is the password; any user name),
``/datastore/`` (list, upload, image, label download and save), ``/activelearning/{strategy}``,
``/session/``, ``/infer/{model}`` (click models ``clickadapt_2d`` and ``clickadapt_3d``) and ``/train/``
(reports the online model). The work is done by :class:`~clickadapt.server.monailabel.bridge.MonaiLabelBridge`.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from clickadapt.server.auth import require_token
from clickadapt.server.monailabel.bridge import MonaiLabelBridge, parse_params
from clickadapt.server.monailabel.files import volume_suffix
from clickadapt.server.service import BadRequest, normalise_client_id

public = APIRouter(tags=["monailabel"])
"""Routes that need no token (the login itself)."""
router = APIRouter(tags=["monailabel"], dependencies=[Depends(require_token)])
"""Routes behind the access token."""


def get_bridge(request: Request) -> MonaiLabelBridge:
    """FastAPI dependency: the application's MONAI Label bridge."""
    bridge: MonaiLabelBridge = request.app.state.monailabel
    return bridge


Bridge = Annotated[MonaiLabelBridge, Depends(get_bridge)]


def _client(params: dict[str, Any]) -> str:
    value = params.get("client_id")
    try:
        return normalise_client_id(value if isinstance(value, str) and value else "monailabel")
    except BadRequest:
        return "monailabel"


async def _receive(bridge: MonaiLabelBridge, upload: UploadFile) -> tuple[Path, str]:
    """Copy an uploaded file into the bridge's incoming folder; returns its path and the client's file name."""
    filename = upload.filename or "upload.nii.gz"
    target = bridge.files.incoming(filename)

    def copy() -> None:
        with target.open("wb") as output:
            shutil.copyfileobj(upload.file, output)

    await run_in_threadpool(copy)
    return target, filename


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


# ====================================================================== info and login


@public.get("/auth/", summary="Whether a login is needed")
def auth(request: Request) -> dict[str, bool]:
    """``{"enabled": true}`` when the server has an access token (log in at ``/auth/token``)."""
    return {"enabled": request.app.state.settings.token is not None}


@public.post("/auth/token", summary="Log in: the access token as password")
def auth_token(
    request: Request, username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = ""
) -> dict[str, str]:
    """OAuth2 password form (``username``, ``password``): the password is the server's access token; the answer's
    ``access_token`` goes into ``Authorization: Bearer``."""
    expected: str | None = request.app.state.settings.token
    if expected is None:
        raise HTTPException(status_code=404, detail="authentication is off on this server")
    if not secrets.compare_digest(password.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail="wrong password (use the server's access token)")
    return {"access_token": expected, "token_type": "bearer"}


@router.get("/auth/token/valid", summary="Whether the bearer token is valid")
def auth_token_valid() -> dict[str, bool]:
    """200 when the request carries the access token (401 otherwise)."""
    return {"valid": True}


@router.get("/info/", summary="Models, labels, strategies")
def info(bridge: Bridge) -> dict[str, Any]:
    """The click models (2D and 3D), their labels, the active-learning strategies and the datastore counts."""
    return bridge.info()


# ====================================================================== datastore


@router.get("/datastore/", summary="The datastore")
def datastore(bridge: Bridge, output: str | None = None) -> dict[str, Any]:
    """Counts, or with ``output=all`` every image and its labels."""
    return bridge.datastore(output_all=output == "all")


@router.put("/datastore/", summary="Upload a volume")
@router.put("/datastore/image", summary="Upload a volume", include_in_schema=False)
async def upload_image(
    bridge: Bridge,
    file: Annotated[UploadFile, File()],
    image: Annotated[str | None, Query(max_length=128)] = None,
    params: Annotated[str, Form()] = "{}",
) -> dict[str, Any]:
    """A NIfTI or NRRD volume (multipart ``file``) kept as image ``image`` (default its file name's stem)."""
    parse_params(params)
    received, filename = await _receive(bridge, file)
    try:
        return await run_in_threadpool(bridge.add_image, image, received, filename)
    finally:
        _discard(received)


@router.get("/datastore/image", summary="Download a volume", response_class=FileResponse)
def download_image(bridge: Bridge, image: Annotated[str, Query(max_length=128)]) -> FileResponse:
    """The image's file as stored."""
    found = bridge.image_file(image)
    return FileResponse(found.path, media_type="application/octet-stream", filename=found.path.name)


@router.get("/datastore/label", summary="Download a label", response_class=FileResponse)
def download_label(
    bridge: Bridge, label: Annotated[str, Query(max_length=128)], tag: Annotated[str, Query(max_length=32)]
) -> Response:
    """The label of an image (``label`` = the image id) and tag (``final``, ``original``; ``reference``: a data-folder
    scan's reference mask, read-only; ``web``: what the web page labelled of it, made when asked for)."""
    found = bridge.label_file(label, tag)
    if isinstance(found, bytes):
        return Response(
            found,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{label}_{tag}.nii.gz"'},
        )
    return FileResponse(
        found, media_type="application/octet-stream", filename=f"{label}_{tag}{volume_suffix(found.name)}"
    )


@router.put("/datastore/label", summary="Save a label")
async def save_label(
    bridge: Bridge,
    label: Annotated[UploadFile, File()],
    image: Annotated[str, Query(max_length=128)],
    tag: Annotated[str, Query(max_length=32)] = "final",
    params: Annotated[str, Form()] = "{}",
) -> dict[str, Any]:
    """Keep a label volume (the image's shape); ``final`` finishes the image: its clicked slices get their final
    masks and the model its after-image update."""
    client = _client(parse_params(params))
    received, _filename = await _receive(bridge, label)
    try:
        return await run_in_threadpool(bridge.save_label, image, tag or "final", received, client)
    finally:
        _discard(received)


# ====================================================================== active learning and sessions


@router.post("/activelearning/{strategy}", summary="The next image to label")
def next_sample(bridge: Bridge, strategy: str) -> dict[str, Any]:
    """``{"id", "path", "name"}`` of the next image without a final label (``first`` or ``random``); ``{}``
    when every image has one."""
    return bridge.next_sample(strategy)


@router.put("/session/", summary="Keep a volume loaded locally")
async def create_session(bridge: Bridge, files: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
    """The client's volume (multipart ``files``, the first one); infer on it with ``?session_id=``."""
    if not files:
        raise BadRequest("send the volume as multipart 'files'")
    received, filename = await _receive(bridge, files[0])
    try:
        return await run_in_threadpool(bridge.create_session, received, filename)
    finally:
        _discard(received)


@router.get("/session/{session_id}", summary="A session")
def get_session(bridge: Bridge, session_id: str) -> dict[str, Any]:
    """What is known of a session (404 when it is gone)."""
    return bridge.session_info(session_id)


@router.delete("/session/{session_id}", summary="Remove a session")
def remove_session(bridge: Bridge, session_id: str) -> dict[str, Any]:
    """Forget the session and its volume."""
    return bridge.remove_session(session_id)


# ====================================================================== inference and training


def multipart_answer(params: dict[str, Any], payload: bytes, filename: str) -> Response:
    """A ``multipart/form-data`` answer: ``params`` (JSON) and the label file, as MONAI Label sends it."""
    import json

    boundary = secrets.token_hex(16)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\nContent-Type: application/json\r\n\r\n'
        f"{json.dumps(params)}\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + payload + f"\r\n--{boundary}--\r\n".encode()
    return Response(body, media_type=f"multipart/form-data; boundary={boundary}")


@router.post("/infer/{model}", summary="Segment from clicks")
def infer(
    bridge: Bridge,
    model: str,
    image: Annotated[str | None, Query(max_length=128)] = None,
    session_id: Annotated[str | None, Query(max_length=128)] = None,
    params: Annotated[str, Form()] = "{}",
) -> Response:
    """``params``: ``foreground`` / ``background`` voxel lists ``[i, j, k]`` in the file's order (the whole list so
    far), ``label``, and for ``clickadapt_2d`` the ``slice`` k. The answer is multipart: ``params`` and one label
    file with the input's geometry (for the 2D model only slice k is filled)."""
    values = parse_params(params)
    payload, filename, answer = bridge.infer(model, image, session_id, values, _client(values))
    return multipart_answer(answer, payload, filename)


@router.post("/train/", summary="Training status of the online model", include_in_schema=False)
@router.post("/train/{model}", summary="Save the online model as a version and report it")
def train(bridge: Bridge, model: str | None = None) -> dict[str, Any]:
    """The model learns online with every click and saved label; this saves its weights as a version."""
    return bridge.train(model)


@router.get("/train/", summary="The online model's state")
def train_status(bridge: Bridge, check_if_running: bool = False) -> dict[str, Any]:
    """The online model as a finished training task; with ``check_if_running`` 404 (nothing runs offline)."""
    if check_if_running:
        raise HTTPException(status_code=404, detail="no training task is running (the model adapts online)")
    return bridge.train_status()


@router.delete("/train/", summary="Stop training (nothing runs offline)")
def train_stop(bridge: Bridge) -> dict[str, Any]:
    """Nothing to stop: answers the online model's state."""
    return bridge.train_status()
