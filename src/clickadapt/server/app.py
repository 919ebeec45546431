"""The FastAPI application: the REST API (OpenAPI at ``/docs``), the web page and its static files."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from clickadapt import __version__
from clickadapt.data.sample import Sample
from clickadapt.server.auth import TOKEN_COOKIE, TOKEN_QUERY, client_id, get_service, require_token, token_is_valid
from clickadapt.server.guards import RequestGuard
from clickadapt.server.images import CLASS_COLOURS
from clickadapt.server.monailabel import MonaiLabelBridge
from clickadapt.server.routers import images, model, monailabel, sources
from clickadapt.server.schemas import ServerInfo
from clickadapt.server.service import AnnotationService, ServiceError
from clickadapt.server.settings import ServerSettings, is_loopback

STATIC_DIR = Path(__file__).resolve().parent / "static"


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """One readable line naming every invalid field, e.g. ``body.row: Input should be a valid integer``.

    The offending input is never echoed (it may be huge, or a JSON ``NaN`` that cannot be serialised).
    """
    parts = []
    for item in errors:
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
        message = str(item.get("msg", "invalid value"))
        parts.append(f"{location}: {message}")
    return "invalid request: " + "; ".join(parts)[:2000]


DESCRIPTION = """
Interactive segmentation that keeps learning from your clicks (OAIMS). Every action of the web page is an
endpoint here: list and upload images, open one, add clicks (the answer carries the new mask and the model
version that produced it), undo, reset, finish (runs the after-image update and saves a model version),
export masks, switch the adaptation strategy and roll the model back.

Send `X-Client-Id: <id>` to keep your own image state (the page sends one per browser tab). When the
server has an access token, send `Authorization: Bearer <token>` (or `?token=`).
"""


def create_app(settings: ServerSettings | None = None, samples: Sequence[Sample] | None = None) -> FastAPI:
    """Build the application.

    Args:
        settings: Server settings; ``None`` reads ``CLICKADAPT_*`` environment variables.
        samples: Images to serve instead of the data folder / demo images (tests, embedding).

    Returns:
        The FastAPI app; ``app.state.service`` is its :class:`AnnotationService`.

    Raises:
        ValueError: When listening beyond loopback without an access token, or see :class:`AnnotationService`.
    """
    settings = settings or ServerSettings()
    if not is_loopback(settings.host) and settings.token is None:
        raise ValueError(f"listening on {settings.host} (not loopback) requires an access token (--token)")
    service = AnnotationService(settings, samples)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(
        title="clickadapt",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "images", "description": "images and their labelling sessions"},
            {"name": "uploads", "description": "uploads, volumes and the data folder"},
            {"name": "model", "description": "the shared adapting model"},
            {"name": "server", "description": "server information"},
            {"name": "monailabel", "description": "MONAI Label-compatible endpoints (3D Slicer's MONAILabel module)"},
        ],
    )
    app.state.settings = settings
    app.state.service = service
    app.state.monailabel = MonaiLabelBridge(service)

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, error: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": error.message}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_validation_errors(error.errors())}, status_code=422)

    app.add_middleware(RequestGuard, settings=settings)

    guarded = [Depends(require_token)]
    app.include_router(images.router, dependencies=guarded)
    app.include_router(sources.router, dependencies=guarded)
    app.include_router(model.router, dependencies=guarded)
    app.include_router(monailabel.public)
    app.include_router(monailabel.router)  # guarded by the token inside

    @app.get("/api/health", tags=["server"], summary="Liveness (no token needed)")
    def health() -> dict[str, str]:
        """``{"status": "ok"}`` while the server runs."""
        return {"status": "ok"}

    @app.get("/api/info", response_model=ServerInfo, tags=["server"], dependencies=guarded, summary="Start-up info")
    def info(
        service: Annotated[AnnotationService, Depends(get_service)], client: Annotated[str, Depends(client_id)]
    ) -> ServerInfo:
        """Task, classes and their colours, limits, the caller's client id and the model."""
        return ServerInfo(
            task=service.models.task.name,
            class_names=list(service.models.task.class_names),
            class_colours=list(CLASS_COLOURS[: service.models.task.num_classes]),
            max_upload_bytes=settings.max_upload_bytes,
            client_id=client,
            data_folder=service.catalogue.data_root is not None,
            crops=service.models.task.image_channels == 3,
            channel=settings.channel if service.models.task.image_channels == 1 else None,
            data_warning=service.catalogue.data_warning,
            model=service.models.model_info(),
        )

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        if not token_is_valid(request):
            return JSONResponse(
                {"detail": "missing or wrong access token: open the address printed by `clickadapt serve`"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        response = FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
        query_token = request.query_params.get(TOKEN_QUERY)
        if settings.token is not None and query_token:
            response.set_cookie(TOKEN_COOKIE, query_token, httponly=True, samesite="strict")
        return response

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
