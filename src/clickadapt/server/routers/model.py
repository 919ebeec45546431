"""The shared model: version, adaptation settings, saved versions, rollback and the learning chart."""

from __future__ import annotations

from fastapi import APIRouter

from clickadapt.server.routers.parts import Client, Models, Sessions
from clickadapt.server.schemas import ChartPoint, ErrorOut, ModelInfo, ModelSettingsIn, ModelVersionInfo, RollbackIn

router = APIRouter(prefix="/api", tags=["model"])
ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorOut, "description": "invalid input"},
    404: {"model": ErrorOut, "description": "unknown version"},
    409: {"model": ErrorOut, "description": "stored version unusable"},
}


@router.get("/model", response_model=ModelInfo, summary="The shared model")
def model_info(models: Models) -> ModelInfo:
    """Current version, strategy, adaptation on/off and every saved version."""
    return models.model_info()


@router.put("/model/settings", response_model=ModelInfo, responses=ERRORS, summary="Change adaptation")
def set_model_settings(body: ModelSettingsIn, models: Models, client: Client) -> ModelInfo:
    """Choose the adaptation strategy and/or switch adaptation on or off (weights are unchanged)."""
    return models.set_model_settings(body.strategy, body.adaptation, client)


@router.post("/model/versions", response_model=ModelVersionInfo, status_code=201, summary="Save a model version")
def save_version(models: Models, client: Client) -> ModelVersionInfo:
    """Save the current weights as a model version now (versions are also saved after every finished image)."""
    return models.save_version(client)


@router.post("/model/rollback", response_model=ModelInfo, responses=ERRORS, summary="Roll back the model")
def rollback(body: RollbackIn, models: Models, client: Client) -> ModelInfo:
    """Load a saved version into the shared model; recorded as a new version, nothing is deleted."""
    return models.rollback(body.version, client)


@router.get("/stats/chart", response_model=list[ChartPoint], summary="Clicks per finished image")
def chart(sessions: Sessions) -> list[ChartPoint]:
    """Clicks needed per finished image in order of finishing: the model learning, as the page plots it."""
    return sessions.chart()
