"""Images and their labelling sessions: list, open, click, undo, reset, finish, masks and export."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Response

from clickadapt.server.datastore import encode_label_png
from clickadapt.server.routers.parts import Catalogue, Client, Sessions
from clickadapt.server.schemas import (
    ClickIn,
    CorrectionIn,
    CropIn,
    ErrorOut,
    ImageInfo,
    NextImage,
    OpenRequest,
    ReferenceScore,
    SessionView,
)

router = APIRouter(prefix="/api/images", tags=["images"])
ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorOut, "description": "invalid input"},
    404: {"model": ErrorOut, "description": "unknown image"},
    409: {"model": ErrorOut, "description": "conflicts with the image's state"},
}
PNG_RESPONSE: dict[int | str, dict[str, object]] = {200: {"content": {"image/png": {}}, "description": "a PNG"}}


@router.get("", response_model=list[ImageInfo], summary="List the images with status and clicks")
def list_images(catalogue: Catalogue) -> list[ImageInfo]:
    """Every image (data folder or demo, and uploads) in list order."""
    return catalogue.list_images()


@router.get("/next", response_model=NextImage, summary="The next image that is not done")
def next_image(catalogue: Catalogue, after: str | None = None) -> NextImage:
    """The first image after ``after`` (wrapping around) whose status is not ``done``."""
    return NextImage(image=catalogue.next_image(after))


@router.get("/{image_id}", response_model=ImageInfo, responses=ERRORS, summary="One image")
def get_image(image_id: str, catalogue: Catalogue) -> ImageInfo:
    """One image with its status."""
    return catalogue.get_image(image_id)


@router.get(
    "/{image_id}/display.png", response_class=Response, responses={**PNG_RESPONSE, **ERRORS}, summary="The picture"
)
def display_png(image_id: str, catalogue: Catalogue) -> Response:
    """The 8-bit picture the page shows; click coordinates are pixels of this picture."""
    return Response(catalogue.display_png(image_id), media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@router.get(
    "/{image_id}/picture",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "a JPEG or PNG"}, **ERRORS},
    summary="The picture the page shows",
)
def page_picture(image_id: str, catalogue: Catalogue) -> Response:
    """What the page draws under the mask, stretched over ``display.png``'s pixels: a photograph the model sees
    resized onto its grid comes as itself (JPEG, its own aspect ratio, up to 2048 pixels a side); any other image
    as ``display.png``."""
    content, media_type = catalogue.page_picture(image_id)
    return Response(content, media_type=media_type, headers={"Cache-Control": "max-age=3600"})


@router.post(
    "/{image_id}/crop", response_model=ImageInfo, status_code=201, responses=ERRORS, summary="Crop a photograph"
)
def crop_image(image_id: str, box: CropIn, catalogue: Catalogue) -> ImageInfo:
    """Make a new image of the square of a photograph around a box (e.g. around the optic disc, which the
    fundus model expects to fill about two thirds of the picture). Its masks are exported in the whole
    picture's frame. The same square again returns the same image."""
    return catalogue.add_crop(image_id, box.top, box.left, box.bottom, box.right)


@router.post("/{image_id}/open", response_model=SessionView, responses=ERRORS, summary="Open an image")
def open_image(
    image_id: str, sessions: Sessions, client: Client, request: Annotated[OpenRequest | None, Body()] = None
) -> SessionView:
    """Make the image this client's current one; resumes its stored clicks. Finished images open read-only
    unless ``relabel`` is true; an image open in another tab is refused (409) unless ``take_over`` is true."""
    if request is None:
        return sessions.open_image(image_id, client)
    return sessions.open_image(image_id, client, relabel=request.relabel, take_over=request.take_over)


@router.get("/{image_id}/session", response_model=SessionView, responses=ERRORS, summary="State of an image")
def session_state(image_id: str, sessions: Sessions, client: Client) -> SessionView:
    """Clicks and current mask, without opening the image."""
    return sessions.session_view(image_id, client)


@router.post("/{image_id}/clicks", response_model=SessionView, responses=ERRORS, summary="Add a click")
def add_click(image_id: str, click: ClickIn, sessions: Sessions, client: Client) -> SessionView:
    """Add a click (class by index or name; 0 / background for a background click). The answer holds the new
    mask, the model version that produced it and the time the click took."""
    return sessions.add_click(image_id, client, click.row, click.col, click.label)


@router.post("/{image_id}/corrections", response_model=SessionView, responses=ERRORS, summary="Brush or erase")
def add_correction(image_id: str, stroke: CorrectionIn, sessions: Sessions, client: Client) -> SessionView:
    """Paint a stroke over the current mask (a class, or 0 / background to erase): the final touch-up where
    clicks cannot fix a region. Recorded as a correction; the finished label and the after-image update use
    the edited mask."""
    points = [(int(row), int(col)) for row, col in stroke.points]
    return sessions.add_correction(image_id, client, points, stroke.radius, stroke.label)


@router.post("/{image_id}/release", status_code=204, responses=ERRORS, summary="Let go of an image")
def release(image_id: str, sessions: Sessions, client: Client) -> Response:
    """The tab gives the image up (the page sends this when it closes), so another tab may open it at once.
    ``navigator.sendBeacon`` cannot send headers: the client id may come as ``?client=``."""
    sessions.release(image_id, client)
    return Response(status_code=204)


@router.post("/{image_id}/undo", response_model=SessionView, responses=ERRORS, summary="Undo the last click")
def undo(image_id: str, sessions: Sessions, client: Client) -> SessionView:
    """Remove the last click and, when no other update came after it, its weight update."""
    return sessions.undo(image_id, client)


@router.post("/{image_id}/reset", response_model=SessionView, responses=ERRORS, summary="Remove all clicks")
def reset(image_id: str, sessions: Sessions, client: Client) -> SessionView:
    """Remove every click of the image; the weights are untouched."""
    return sessions.reset(image_id, client)


@router.post("/{image_id}/finish", response_model=SessionView, responses=ERRORS, summary="Finish the image")
def finish(image_id: str, sessions: Sessions, client: Client) -> SessionView:
    """Store the current mask as the image's label and run the after-image update (a new model version)."""
    return sessions.finish(image_id, client)


@router.get("/{image_id}/mask.png", response_class=Response, responses={**PNG_RESPONSE, **ERRORS}, summary="A mask")
def mask_png(image_id: str, sessions: Sessions, tag: Literal["current", "original", "final"] = "current") -> Response:
    """A mask as an 8-bit PNG of class indices in the geometry of ``display.png``; the header
    ``X-Model-Version`` names the model version that produced it."""
    mask, version = sessions.mask(image_id, tag)
    return Response(encode_label_png(mask), media_type="image/png", headers={"X-Model-Version": str(version)})


@router.get(
    "/{image_id}/reference",
    response_model=ReferenceScore,
    responses=ERRORS,
    summary="Compare the mask with the reference mask",
)
def reference(image_id: str, sessions: Sessions) -> ReferenceScore:
    """Dice of the current mask against the image's reference mask: ``X_mask.ext`` beside a data-folder picture
    ``X.ext``, or for a volume's slice ``X_mask.nii.gz`` or its folder's only label volume (``has_reference`` in
    the image list); 404 without one or before the first click. The reference is read for this comparison only:
    the model never sees it."""
    return sessions.reference_score(image_id)


@router.get(
    "/{image_id}/reference.png",
    response_class=Response,
    responses={**PNG_RESPONSE, **ERRORS},
    summary="The reference mask, to draw",
)
def reference_png(image_id: str, sessions: Sessions) -> Response:
    """The image's reference mask as an RGBA overlay in the frame of the page's mask overlay (``mask_overlay``),
    each class in its own colour (unlike the mask's), the rest transparent; 404 without one. For the user's eyes
    only: the model never sees it."""
    return Response(sessions.reference_overlay(image_id), media_type="image/png")


@router.get(
    "/{image_id}/export",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "application/gzip": {}}, "description": "the file"}, **ERRORS},
    summary="Export a mask",
)
def export_mask(
    image_id: str,
    sessions: Sessions,
    format: Annotated[Literal["png", "nifti"], Query(description="png, or nifti aligned with the source")] = "png",
    tag: Literal["current", "original", "final"] = "current",
) -> Response:
    """The mask in the source image's geometry: a PNG of class indices, or a NIfTI with the source volume's
    shape and affine (only the labelled slice filled)."""
    payload, media_type, filename = sessions.export(image_id, tag, format)
    return Response(
        payload, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
