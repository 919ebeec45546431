"""Request and response bodies of the REST API (they make up the OpenAPI document at ``/docs``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

MAX_INDEX = 2**31 - 1
"""Largest row, column, slice or version number accepted (larger ones get 422 naming the field)."""
Index = Annotated[int, Field(ge=-MAX_INDEX, le=MAX_INDEX)]
Version = Annotated[int, Field(ge=0, le=MAX_INDEX)]


class ImageInfo(BaseModel):
    """An image in the list."""

    id: str = Field(description="stable identifier used in every image URL")
    name: str = Field(description="display name (file name, with the slice for volumes)")
    origin: Literal["demo", "data", "upload"]
    task: str
    status: Literal["new", "in_progress", "done"]
    clicks: int = Field(description="clicks of the finished session (done) or of the session in progress")
    source_id: str | None = Field(None, description="file the image comes from (volumes: add other slices there)")
    slice_index: int | None = Field(None, description="axial slice of a volume")
    num_slices: int | None = Field(None, description="slices of the source volume")
    height: int | None = Field(None, description="preprocessed height (known once decoded)")
    width: int | None = Field(None, description="preprocessed width")
    has_reference: bool = Field(
        False,
        description="a reference mask lies in the data folder: X_mask.ext beside the picture X.ext, or for a volume's "
        "slice X_mask.nii.gz or the folder's only label volume (GET …/reference)",
    )


class ReferenceScore(BaseModel):
    """How the current mask compares with the image's reference mask (read from the data folder, never used by
    the model)."""

    reference: str = Field(description="the reference mask file, relative to the data folder")
    dice: dict[str, float] = Field(description="Dice (0–1) of the current mask per region of the task")


class ReferenceSlices(BaseModel):
    """Where a volume's reference mask (read from the data folder, never used by the model) marks something."""

    reference: str = Field(description="the reference volume, relative to the data folder")
    pixels: list[int] = Field(description="per axial slice (the slider's numbering), the pixels it marks")


class ReferenceChoices(BaseModel):
    """Which label volumes of a data-folder scan's folder may be its reference, and which one is."""

    label_volumes: list[str] = Field(description="the label volumes of the scan's folder, relative to the data folder")
    reference: str | None = Field(description="the scan's reference mask now (None: none)")
    own_mask: bool = Field(description="whether the reference is the scan's own X_mask.nii.gz (then not chosen)")


class ReferenceChoiceIn(BaseModel):
    """The label volume to make the reference of the scans of its folder."""

    label_volume: str = Field(max_length=1024, description="relative to the data folder, as the choices list it")


class VolumeReferenceScore(BaseModel):
    """How the masks of a volume's labelled slices compare, together, with the volume's reference mask (read from
    the data folder, never used by the model)."""

    reference: str = Field(description="the reference volume, relative to the data folder")
    slices: int = Field(description="axial slices of the volume")
    labelled_slices: list[int] = Field(description="slices with a mask now (finished, or open with clicks), in order")
    marked_slices: list[int] = Field(description="slices on which the reference marks something, in order")
    dice_labelled: dict[str, float] | None = Field(
        description="per region, Dice (0–1) over the labelled slices taken together (one 3D overlap, not a mean of "
        "slices); null before any slice has a mask"
    )
    dice_volume: dict[str, float] = Field(
        description="per region, Dice (0–1) over the whole volume, a slice without a mask counting as background"
    )


class ClickIn(BaseModel):
    """A click in preprocessed image coordinates (those of ``display.png``)."""

    row: Index = Field(description="row, 0 at the top")
    col: Index = Field(description="column, 0 at the left")
    label: Annotated[int, Field(ge=-MAX_INDEX, le=MAX_INDEX)] | Annotated[str, Field(min_length=1, max_length=64)] = (
        Field(1, description="class index or class name; 0 / 'background' is a background click")
    )


class ClickOut(BaseModel):
    """A stored click with what it cost and which model version answered it."""

    row: int
    col: int
    label: int
    class_name: str
    model_version: int = Field(description="model version that produced the mask shown after this click")
    forward_s: float = Field(description="seconds of the forward passes")
    update_s: float = Field(description="seconds of the weight update (Mid-Interaction)")


class SessionView(BaseModel):
    """The state of one image for the asking client: its clicks and the current mask."""

    image: ImageInfo
    session_id: int | None = Field(None, description="datastore id of the labelling session")
    state: Literal["new", "in_progress", "done"]
    clicks: list[ClickOut] = Field(default_factory=list)
    mask_overlay: str | None = Field(
        None,
        description=(
            "current mask as a data URL of an RGBA PNG (classes coloured, background transparent), to be drawn "
            "stretched over display.png: at the source image's resolution with smooth edges (logits resampled "
            "before the argmax) for resized images such as fundus photographs (at most 2048 pixels a side), on "
            "display.png's own grid for centre padded or cropped slices (whose pixels are the source's)"
        ),
    )
    mask_model_version: int | None = Field(None, description="model version that produced the current mask")
    model_version: int = Field(description="current version of the shared model")
    source_domain: bool = Field(
        False,
        description=(
            "whether the image is of the model's source domain (serve --source-domain): it is segmented by a "
            "per-image copy of the base model (mask_model_version is the base version) and never changes the "
            "shared model"
        ),
    )
    corrections: int = Field(0, description="brush and eraser strokes painted over the mask")
    last_click_s: float | None = Field(None, description="seconds the last click took (forward + update)")
    weights_restored: bool | None = Field(
        None, description="after an undo: whether the click's weight update was undone too"
    )
    message: str = ""


class CorrectionIn(BaseModel):
    """A brush or eraser stroke over the current mask, in preprocessed image coordinates."""

    points: list[tuple[Index, Index]] = Field(
        min_length=1, max_length=5000, description="(row, col) points of the stroke, in order"
    )
    radius: float = Field(3.0, ge=0.5, le=64.0, description="brush radius in pixels")
    label: Annotated[int, Field(ge=-MAX_INDEX, le=MAX_INDEX)] | Annotated[str, Field(min_length=1, max_length=64)] = (
        Field(1, description="class painted; 0 / 'background' erases")
    )


class OpenRequest(BaseModel):
    """Opening an image."""

    relabel: bool = Field(
        False, description="start a new session on a finished image (the earlier final mask is kept in history)"
    )
    take_over: bool = Field(
        False, description="open the image even if another browser tab has it open (that tab loses it)"
    )


class ModelVersionInfo(BaseModel):
    """A saved model version."""

    version: int
    kind: Literal["initial", "image", "manual", "rollback"]
    parent_version: int | None
    image_id: str | None
    strategy: str
    created: str
    sha256: str
    note: str = ""


class SafetyEventOut(BaseModel):
    """Something the safety layer did to the shared model (see ``clickadapt.adaptation.safety``)."""

    kind: str = Field(description="update_rejected, rollback, drift_unresolved or sentinel_pullback")
    image_id: str
    reason: str = Field(description="a sentence saying why, with the numbers")
    version: int = Field(description="model version after the event")


class ModelInfo(BaseModel):
    """The shared model: current version, adaptation settings and saved versions."""

    task: str
    class_names: list[str]
    version: int = Field(description="current version (+1 per weight update)")
    saved_version: int = Field(description="latest saved version")
    autosaved_version: int | None = Field(
        None,
        description="newest version whose weights a restart finds on disk with autosave on: the version in the "
        "autosave file, written in the background after each click that changed them (a restart resumes from it "
        "when it is newer than saved_version), or, until the first autosave after a start, the version the server "
        "started from; null when autosave is off (serve --no-autosave). Never a negative or placeholder number.",
    )
    strategy: str
    adaptation: bool
    strategies: list[str]
    versions: list[ModelVersionInfo]
    safety_events: list[SafetyEventOut] = Field(
        default_factory=list, description="the safety layer's latest actions since the server started, newest last"
    )
    source_sentinel: bool = Field(False, description="whether the source sentinel is on (serve --sentinel)")
    source_rehearsal: bool = Field(False, description="whether the source rehearsal is on (serve --rehearsal)")
    source_domains: list[str] = Field(
        default_factory=list, description="patterns of image names served by per-image copies of the base model"
    )
    source_copy_events: list[SafetyEventOut] = Field(
        default_factory=list,
        description="what the update guard did on the per-image copies that serve source-domain images, newest last",
    )


class ModelSettingsIn(BaseModel):
    """Changing how the shared model adapts."""

    strategy: str | None = Field(None, max_length=64, description="strategy name, e.g. 'oaims', 'post', 'mid'")
    adaptation: bool | None = Field(None, description="False freezes the model")


class RollbackIn(BaseModel):
    """Rolling the shared model back to a saved version (recorded as a new version)."""

    version: Version


class ChartPoint(BaseModel):
    """One finished image: the clicks it needed and the model version after its update."""

    image_id: str
    name: str
    clicks: int
    model_version: int
    finished: str


class SourceInfo(BaseModel):
    """An uploaded or data-folder file."""

    id: str
    name: str
    origin: Literal["data", "upload"]
    kind: Literal["image", "volume"]
    num_slices: int | None
    dicom_series: bool = Field(
        False,
        description="a DICOM series of the data folder: its labelled slices also export as a DICOM SEG "
        "(GET /api/sources/{id}/export?format=seg)",
    )


class UploadResult(BaseModel):
    """An upload (or data file) and the image made from it."""

    source: SourceInfo
    image: ImageInfo
    warning: str | None = Field(
        None, description="set when the file does not look like what the model segments (colour vs grey)"
    )


class CropIn(BaseModel):
    """A box the user drew around the region of interest, in the image's ``display.png`` pixels; the crop is
    the square of the whole picture centred on it, as long as its longer side."""

    top: Index = Field(description="first row of the box")
    left: Index = Field(description="first column of the box")
    bottom: Index = Field(description="row after the box's last")
    right: Index = Field(description="column after the box's last")


class SliceIn(BaseModel):
    """Making an image from one slice of a volume."""

    index: Index = Field(description="axial slice index, 0-based")


class DataImageIn(BaseModel):
    """Registering a file of the data folder (path relative to it)."""

    path: str = Field(min_length=1, max_length=4096)
    slice: Index | None = None


class ServerInfo(BaseModel):
    """What the page needs to start."""

    task: str
    class_names: list[str]
    class_colours: list[tuple[int, int, int]]
    max_upload_bytes: int
    client_id: str
    data_folder: bool = Field(description="whether a data folder is served")
    crops: bool = Field(False, description="whether images can be cropped (photographs the model sees resized)")
    channel: int | None = Field(
        None, description="channel of colour (multichannel) pictures a grey model segments (serve --channel)"
    )
    data_warning: str | None = Field(
        None,
        description="why the data folder's files may not suit the model (colour pictures for a grey model without "
        "--channel, grey ones for a colour model)",
    )
    model: ModelInfo


class NextImage(BaseModel):
    """The next image still to label (``None`` when all are done)."""

    image: ImageInfo | None


class ErrorOut(BaseModel):
    """Every error answer."""

    detail: str
