"""Request guards: the access token and the client (browser tab) identity."""

from __future__ import annotations

import secrets

from fastapi import HTTPException, Request

from clickadapt.server.service import AnnotationService, BadRequest, normalise_client_id

TOKEN_COOKIE = "clickadapt_token"
TOKEN_QUERY = "token"
CLIENT_HEADER = "X-Client-Id"
CLIENT_QUERY = "client"


def supplied_token(request: Request) -> str | None:
    """The token a request carries: ``Authorization: Bearer``, ``?token=`` or the page's cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query_params.get(TOKEN_QUERY) or request.cookies.get(TOKEN_COOKIE)


def token_is_valid(request: Request) -> bool:
    """Whether the request may pass: no token is configured, or it carries the right one."""
    expected: str | None = request.app.state.settings.token
    if expected is None:
        return True
    supplied = supplied_token(request)
    return supplied is not None and secrets.compare_digest(supplied.encode(), expected.encode())


def require_token(request: Request) -> None:
    """FastAPI dependency: 401 unless the request carries the access token (when one is configured).

    Raises:
        HTTPException: 401 with a ``WWW-Authenticate: Bearer`` header.
    """
    if not token_is_valid(request):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong access token: send 'Authorization: Bearer <token>' or add '?token=<token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def client_id(request: Request) -> str:
    """FastAPI dependency: the client's identity (``X-Client-Id`` header, one per browser tab; else the ``client``
    query parameter, for ``navigator.sendBeacon`` which cannot set headers; else ``api``).

    Raises:
        HTTPException: 400 for a malformed id.
    """
    try:
        return normalise_client_id(request.headers.get(CLIENT_HEADER) or request.query_params.get(CLIENT_QUERY))
    except BadRequest as error:
        raise HTTPException(status_code=400, detail=error.message) from error


def get_service(request: Request) -> AnnotationService:
    """FastAPI dependency: the application's :class:`AnnotationService`."""
    service: AnnotationService = request.app.state.service
    return service
