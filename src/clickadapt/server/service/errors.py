"""The refusals of the service parts, each with the HTTP status the API answers with, and client ids."""

from __future__ import annotations

import re

DEFAULT_CLIENT = "api"
"""The shared client id of plain API callers (no ``X-Client-Id``)."""
CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ServiceError(Exception):
    """A request the service refuses; ``status`` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    """Invalid input (click outside the image, unknown class, path outside the data folder…)."""

    status = 400


class NotFound(ServiceError):
    """Unknown image, source, model version or file."""

    status = 404


class Conflict(ServiceError):
    """The request does not fit the current state (finishing twice, image open elsewhere, nothing to undo)."""

    status = 409


class PayloadTooLarge(ServiceError):
    """An upload above the configured size limit."""

    status = 413


class UnsupportedMediaType(ServiceError):
    """An upload of a format the server does not read."""

    status = 415


def normalise_client_id(value: str | None) -> str:
    """A safe client id: the given one if well-formed, else ``"api"`` (the shared id of plain API callers).

    Raises:
        BadRequest: If ``value`` is given but malformed.
    """
    if not value:
        return DEFAULT_CLIENT
    if not CLIENT_ID_PATTERN.match(value):
        raise BadRequest("X-Client-Id must be 1-64 characters of letters, digits, '.', '_' or '-'")
    return value


def slug(text: str) -> str:
    """``text`` reduced to a safe file-name stem (letters, digits, ``_``, ``.``, ``-``; ``image`` if empty)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "image"
