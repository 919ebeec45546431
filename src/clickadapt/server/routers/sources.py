"""Uploads, volumes (one image per chosen slice) and the data folder."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from clickadapt.server.routers.parts import Catalogue, Sessions
from clickadapt.server.schemas import (
    MAX_INDEX,
    DataImageIn,
    ErrorOut,
    ImageInfo,
    ReferenceChoiceIn,
    ReferenceChoices,
    ReferenceSlices,
    SliceIn,
    SourceInfo,
    UploadResult,
    VolumeReferenceScore,
)
from clickadapt.server.service import BadRequest, PayloadTooLarge

router = APIRouter(prefix="/api", tags=["uploads"])
MAX_FILENAME = 255
"""Longest accepted file name (characters)."""
ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorOut, "description": "corrupt file or invalid input"},
    404: {"model": ErrorOut, "description": "unknown source or file"},
    413: {"model": ErrorOut, "description": "upload above the size limit"},
    415: {"model": ErrorOut, "description": "unsupported file format"},
}


async def read_limited_body(request: Request, limit: int) -> bytearray:
    """The request body, refusing more than ``limit`` bytes as soon as that is known.

    Raises:
        PayloadTooLarge: Declared or actual size above ``limit``.
        BadRequest: An empty body.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"upload of {declared} bytes exceeds the limit of {limit} bytes")
    body = bytearray()  # grown in place: the upload is held once, not once more as a joined copy
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise PayloadTooLarge(f"upload exceeds the limit of {limit} bytes")
        body += chunk
    if not body:
        raise BadRequest("the upload is empty; send the file's bytes as the request body")
    return body


@router.post(
    "/uploads",
    response_model=UploadResult,
    status_code=201,
    responses=ERRORS,
    summary="Upload an image file",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload(
    request: Request,
    catalogue: Catalogue,
    filename: Annotated[
        str, Query(min_length=1, max_length=MAX_FILENAME, description="the file's name (for display)")
    ] = "upload",
    slice: Annotated[
        int | None,
        Query(ge=-MAX_INDEX, le=MAX_INDEX, description="volumes: axial slice to label (default the middle)"),
    ] = None,
) -> UploadResult:
    """Upload a PNG, JPEG, TIFF, WebP, NIfTI (``.nii``/``.nii.gz``) or DICOM file, or a zip of one DICOM series (one
    file per slice; stored as the NIfTI it stands for), as the raw request body. A volume becomes one image per
    chosen slice (more via ``POST /api/sources/{id}/slices``)."""
    payload = await read_limited_body(request, catalogue.settings.max_upload_bytes)
    return await run_in_threadpool(catalogue.upload, payload, filename, slice)


@router.get("/sources/{source_id}", response_model=SourceInfo, responses=ERRORS, summary="An uploaded or data file")
def get_source(source_id: str, catalogue: Catalogue) -> SourceInfo:
    """A source file: its kind and, for volumes, the number of slices."""
    return catalogue.get_source(source_id)


@router.get(
    "/sources/{source_id}/reference",
    response_model=ReferenceSlices,
    responses=ERRORS,
    summary="Where a volume's reference mask marks something",
)
def reference_slices(source_id: str, catalogue: Catalogue) -> ReferenceSlices:
    """Per axial slice of a data-folder volume, the pixels its reference mask (``X_mask.nii.gz`` or its folder's
    only label volume) marks; 404 without one."""
    return catalogue.reference_slices(source_id)


@router.get(
    "/sources/{source_id}/reference/choices",
    response_model=ReferenceChoices,
    responses=ERRORS,
    summary="The label volumes that may be a volume's reference",
)
def reference_choices(source_id: str, catalogue: Catalogue) -> ReferenceChoices:
    """The label volumes of a data-folder volume's folder, and which one is its reference now."""
    return catalogue.reference_choices(source_id)


@router.put(
    "/sources/{source_id}/reference",
    response_model=ReferenceChoices,
    responses=ERRORS,
    summary="Choose the reference of a folder's scans",
)
def choose_reference(source_id: str, body: ReferenceChoiceIn, catalogue: Catalogue) -> ReferenceChoices:
    """Make one of the label volumes of the volume's folder the reference of the scans there that have no
    ``X_mask.nii.gz`` of their own (kept in the store)."""
    return catalogue.choose_reference(source_id, body.label_volume)


@router.get(
    "/sources/{source_id}/reference/score",
    response_model=VolumeReferenceScore,
    responses=ERRORS,
    summary="Dice of a volume's labelled slices against its reference mask",
)
def volume_reference_score(source_id: str, sessions: Sessions) -> VolumeReferenceScore:
    """The masks of the volume's labelled slices against its reference mask as one 3D overlap: over the labelled
    slices, and over the whole volume (a slice without a mask counts as background); 404 without a reference."""
    return sessions.volume_reference_score(source_id)


@router.get(
    "/sources/{source_id}/export",
    response_class=Response,
    responses={
        200: {"content": {"application/gzip": {}, "application/dicom": {}}, "description": "the NIfTI or SEG file"},
        **ERRORS,
    },
    summary="Export a volume's labelled slices as one NIfTI (or DICOM SEG)",
)
def export_volume(
    source_id: str,
    sessions: Sessions,
    tag: Literal["current", "original", "final"] = "current",
    format: Literal["nifti", "seg"] = "nifti",
) -> Response:
    """Every slice of the volume with a mask (``tag``) in one NIfTI with the volume's shape and affine, the other
    slices 0: the per-image NIfTI exports of its slices, together. 404 before any slice has a mask.
    ``format=seg``, for a DICOM series of the data folder (``dicom_series`` in its source): the same label as a
    DICOM Segmentation object referring to the series' images, one segment per class, for a PACS."""
    payload, media_type, filename = sessions.export_volume(source_id, tag, format)
    return Response(
        payload, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


@router.get(
    "/sources/{source_id}/slices/{index}/preview.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "a PNG"}, **ERRORS},
    summary="Preview one slice of a volume",
)
def slice_preview(
    source_id: str, index: Annotated[int, Path(ge=-MAX_INDEX, le=MAX_INDEX)], catalogue: Catalogue
) -> Response:
    """An 8-bit picture of one axial slice (for the slice slider)."""
    return Response(catalogue.slice_preview(source_id, index), media_type="image/png")


@router.post(
    "/sources/{source_id}/slices",
    response_model=ImageInfo,
    status_code=201,
    responses=ERRORS,
    summary="Make an image of one slice of a volume",
)
def add_slice(source_id: str, body: SliceIn, catalogue: Catalogue) -> ImageInfo:
    """Register one axial slice of a volume as an image (returns the existing one if already registered)."""
    return catalogue.add_slice(source_id, body.index)


@router.get("/data/files", response_model=list[str], summary="Files of the data folder")
def data_files(catalogue: Catalogue) -> list[str]:
    """Readable image files inside the data folder, as relative paths (empty without ``--data``)."""
    return catalogue.data_files()


@router.post(
    "/data/images", response_model=UploadResult, status_code=201, responses=ERRORS, summary="Add a data-folder file"
)
def add_data_image(body: DataImageIn, catalogue: Catalogue) -> UploadResult:
    """Register a file of the data folder (path relative to it; paths leading outside are refused)."""
    return catalogue.add_data_image(body.path, body.slice)
