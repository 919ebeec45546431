"""ASGI guards in front of every route: allowed hosts, same-origin writes and request body limits.

- **Hosts (DNS rebinding).** Without an access token the server trusts whoever can reach it, which is only
  this machine (it listens on loopback). A web page can still get its browser to talk to it through a name
  of the attacker's that resolves to 127.0.0.1; such requests carry that name in ``Host`` and are refused
  unless it is a loopback name, the bound address or in ``allowed_hosts``.
- **Cross-site writes.** Without a token, a state-changing request (POST, PUT, PATCH, DELETE) whose
  ``Origin`` (or, without one, ``Referer``) is not the server's own origin is refused: another site's page
  (or another port on loopback) cannot upload, click, finish or roll back. Requests without either header
  (``curl``, scripts) pass; browsers always send ``Origin`` with such requests.
- **Body limits.** Uploads (``/api/uploads`` and the MONAI Label uploads of :data:`UPLOAD_PATHS`, which 3D
  Slicer sends as multipart PUTs without ``Origin``) may be ``max_upload_bytes``, every other body
  ``max_json_bytes``; the limit is
  enforced on the declared ``Content-Length`` and again while the body streams in (chunked bodies too), so
  the server never buffers more than the limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from clickadapt.server.settings import LOOPBACK_NAMES, ServerSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_PATH = "/api/uploads"
UPLOAD_PATHS = frozenset({UPLOAD_PATH, "/datastore/", "/datastore/image", "/datastore/label", "/session/"})
"""Routes that receive files (volumes, labels); every other body is held to ``max_json_bytes``."""
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyTooLarge(HTTPException):
    """A request body above its limit (raised while it streams in; answered with 413)."""

    def __init__(self, limit: int, what: str) -> None:
        super().__init__(status_code=413, detail=f"{what} exceeds the limit of {limit} bytes")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def request_origin(scope: Scope) -> str | None:
    """``scheme://host[:port]`` the request says it comes from: ``Origin``, else ``Referer``'s; ``None`` if neither."""
    origin = _header(scope, b"origin")
    if origin is not None:
        return origin.strip().lower()
    referer = _header(scope, b"referer")
    if referer:
        parts = urlsplit(referer.strip())
        return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else "null"
    return None


class RequestGuard:
    """ASGI middleware: host allow-list and same-origin writes (no-token mode), body size limits (always).

    Args:
        app: The wrapped application.
        settings: The server settings (token, host, allowed hosts, limits).
    """

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """Status and message refusing the request before it reaches a route, or ``None`` to let it pass."""
        settings = self.settings
        method = str(scope.get("method", "GET")).upper()
        path = str(scope.get("path", ""))
        limit = settings.max_upload_bytes if path in UPLOAD_PATHS else settings.max_json_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            return 413, f"request body of {declared.strip()} bytes exceeds the limit of {limit} bytes"
        if settings.token is not None:
            return None  # the token (header, query or SameSite=Strict cookie) already proves the caller
        host = _header(scope, b"host") or ""
        if not settings.host_is_allowed(host):
            names = ", ".join([*LOOPBACK_NAMES, *settings.allowed_hosts])
            return 403, (
                f"request for host {host[:100]!r} refused: this server answers only to {names} "
                "(add a name with --allowed-host; protects against DNS rebinding)"
            )
        if method in UNSAFE_METHODS:
            origin = request_origin(scope)
            own = f"{scope.get('scheme', 'http')}://{host}".lower()
            if origin is not None and origin != own:
                return 403, (
                    f"cross-site request refused: changes are accepted only from this server's own page ({own}), "
                    f"not from {origin[:100]}"
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse, or pass the request on with a ``receive`` that stops at the body limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is not None:
            status, message = refused
            await JSONResponse({"detail": message}, status_code=status)(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        is_upload = path in UPLOAD_PATHS
        limit = self.settings.max_upload_bytes if is_upload else self.settings.max_json_bytes
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, "upload" if is_upload else "request body")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as error:  # raised where no exception handler answered it
            if not started:
                await JSONResponse({"detail": error.detail}, status_code=413)(scope, receive, send)
