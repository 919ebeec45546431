"""Server settings: command-line options and ``CLICKADAPT_*`` environment variables in one typed object."""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_JSON_BYTES = 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
"""A 2D picture may declare at most this many pixels (height × width): a 4096 × 4096 photograph fits."""
DEFAULT_MAX_VOLUME_VOXELS = 512 * 512 * 512
"""A volume may declare at most this many voxels: a 512 × 512 × 512 volume fits."""
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_STORE = Path("clickadapt-store")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost``, ``127.x``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: treat as reachable from outside


class ServerSettings(BaseSettings):
    """Everything ``clickadapt serve`` can be told; each field can also be set as ``CLICKADAPT_<NAME>``.

    Attributes:
        host: Interface to listen on; loopback by default. Any other host requires an access token.
        port: TCP port (0 = any free port).
        token: Access token; required as ``Authorization: Bearer <token>``, ``?token=`` or the cookie the
            page sets, whenever it is set. Generated when ``host`` is not loopback and none is given.
        store: Folder of the datastore: ``clickadapt.sqlite``, model versions, uploads.
        data: Folder of images to label (PNG, JPEG, TIFF, WebP, NIfTI, DICOM); ``None`` = the built-in demo images.
        model: Checkpoint path, or a task name meaning its shipped model.
        strategy: Adaptation strategy of the shared model (see ``clickadapt.adaptation.strategies``).
        adaptation: Whether the model adapts at all (off = the ``frozen`` strategy).
        device: Torch device of the model.
        image_size: Side of the preprocessed images; ``None`` = the checkpoint's preprocessing size, else the
            task default (brain 256, fundus 512).
        max_upload_bytes: Largest accepted upload; larger ones get 413 (checked while the body streams in).
        max_json_bytes: Largest accepted body of every other request (JSON); larger ones get 413.
        max_image_pixels: Largest 2D picture (height × width) an upload or data file may *declare* in its
            header; checked before any pixel is decoded, so a small file claiming a huge picture (a
            decompression bomb) is refused at once.
        max_volume_voxels: Largest volume (NIfTI, multi-frame DICOM) a file may declare in its header.
        allowed_hosts: Host names (``Host`` header) accepted besides the loopback names and ``host`` itself
            when no token is set (protection against DNS rebinding). ``*`` accepts every host.
        autosave_every_click: Save the weights after every click that changed them (``models/autosave.pt``), so
            that a restart resumes with Mid-Interaction updates; off = resume from the last finished image.
        max_live_sessions: Image sessions kept in memory; older ones are replayed from the datastore on demand.
        claim_timeout_s: An image open in another browser session is refused for this long after that session's
            last request.
        seed: Seed of the adaptation strategy's random choices (synthetic clicks).
        sentinel: Folder of labelled source-domain images (``images/`` + ``masks/``, the ``folder`` reader's
            layout) for the safety layer's source sentinel, which pulls the weights back towards the source
            model when they lose accuracy there; ``None`` = no sentinel.
        rehearsal: Folder of labelled source-domain images (same layout) that the safety layer replays through
            the image update after every finished image, so that adapting to new images does not erode the
            source domain; ``None`` = no rehearsal. Use other images than the sentinel's.
        channel: For a grey (MRI) model, the channel of a multichannel picture to segment, 0-based: e.g. 1 for
            the TCGA-LGG kaggle_3m TIFFs, whose three channels are pre-contrast, FLAIR and post-contrast slices
            of one patient (the shipped brain model segments FLAIR). ``None`` = average the channels to grey
            (with a warning when they differ). Applies to images registered from then on (stored images keep
            the pixels they were prepared with).
        source_domains: Glob patterns (``fnmatch``, case-sensitive) over image names — the path inside the
            data folder, the uploaded file's name, or the demo key — that mark images of the model's source
            domain. Those images never change the shared model: each is segmented by a copy of the base model
            that learns from that image's clicks only (Mid-Interaction) and is reset when it is finished, so
            the model's accuracy on its own domain cannot erode however long it adapts elsewhere
            (``bench/results/long_stream.md``, variant ``oaims+safety+source-episodic``). Empty = every image
            adapts the shared model.
        reference_name: Glob pattern (``fnmatch``, case-sensitive) over file names choosing a folder's reference
            label volume when it holds several (e.g. two annotators' segmentations): the one whose name matches,
            when exactly one does. Folders where none matches, and ``None``, keep the default: the folder's only
            label volume, brain masks aside.
    """

    model_config = SettingsConfigDict(env_prefix="CLICKADAPT_", extra="ignore")

    host: str = LOOPBACK_HOST
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    token: str | None = None
    store: Path = DEFAULT_STORE
    data: Path | None = None
    model: str = "brain"
    strategy: str = "oaims"
    adaptation: bool = True
    device: str = "cpu"
    image_size: int | None = Field(None, ge=8)
    max_upload_bytes: int = Field(DEFAULT_MAX_UPLOAD_BYTES, ge=1)
    max_json_bytes: int = Field(DEFAULT_MAX_JSON_BYTES, ge=1024)
    max_image_pixels: int = Field(DEFAULT_MAX_IMAGE_PIXELS, ge=64)
    max_volume_voxels: int = Field(DEFAULT_MAX_VOLUME_VOXELS, ge=512)
    allowed_hosts: list[str] = Field(default_factory=list)
    autosave_every_click: bool = True
    max_live_sessions: int = Field(16, ge=1)
    claim_timeout_s: float = Field(300.0, ge=0)
    seed: int = 0
    sentinel: Path | None = None
    rehearsal: Path | None = None
    source_domains: list[str] = Field(default_factory=list)
    channel: int | None = Field(None, ge=0, le=2)
    reference_name: str | None = Field(None, min_length=1)

    @field_validator("source_domains")
    @classmethod
    def _non_empty_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern.strip():
                raise ValueError("a source-domain pattern must not be empty (e.g. 'site-A/*')")
        return value

    @field_validator("token")
    @classmethod
    def _non_empty_token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 8:
            raise ValueError("the access token must be at least 8 characters long")
        return value

    def host_is_allowed(self, host_header: str) -> bool:
        """Whether a request's ``Host`` header names this server: a loopback name, ``host`` or an allowed host.

        The port is not compared (the socket decides it); ``*`` in ``allowed_hosts`` accepts every host.
        """
        name = host_header.strip().lower()
        if name.startswith("["):  # [::1]:8000
            name = name[1 : name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.rsplit(":", 1)[0]
        allowed = {*LOOPBACK_NAMES, self.host.lower(), *(item.lower() for item in self.allowed_hosts)}
        return "*" in allowed or name in allowed

    @property
    def requires_token(self) -> bool:
        """Whether requests must carry the access token."""
        return self.token is not None

    def with_token_if_exposed(self) -> ServerSettings:
        """A copy that has a (generated) token when listening beyond loopback; unchanged otherwise."""
        if is_loopback(self.host) or self.token is not None:
            return self
        return self.model_copy(update={"token": secrets.token_urlsafe(24)})
