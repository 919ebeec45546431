"""FastAPI dependencies that hand a router the service part it needs (and the caller's client id).

A router declares e.g. ``sessions: Sessions`` and calls :class:`SessionManager` methods; no router reaches
into another part or into private state::

    @router.post("/{image_id}/undo")
    def undo(image_id: str, sessions: Sessions, client: Client) -> SessionView:
        return sessions.undo(image_id, client)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from clickadapt.server.auth import client_id, get_service
from clickadapt.server.service import ImageCatalogue, ModelRegistry, SessionManager


def get_catalogue(request: Request) -> ImageCatalogue:
    """The application's image catalogue."""
    return get_service(request).catalogue


def get_models(request: Request) -> ModelRegistry:
    """The application's model registry."""
    return get_service(request).models


def get_sessions(request: Request) -> SessionManager:
    """The application's session manager."""
    return get_service(request).sessions


Catalogue = Annotated[ImageCatalogue, Depends(get_catalogue)]
Models = Annotated[ModelRegistry, Depends(get_models)]
Sessions = Annotated[SessionManager, Depends(get_sessions)]
Client = Annotated[str, Depends(client_id)]
