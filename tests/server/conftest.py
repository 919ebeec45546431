"""Fixtures of the server tests (helpers live in ``server_helpers.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from server_helpers import AppFactory, synthetic_samples, write_tiny_checkpoint

from clickadapt.data.sample import Sample
from clickadapt.server.app import create_app
from clickadapt.server.settings import ServerSettings


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the tiny random brain checkpoint (made once per test session)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture
def make_client(tiny_checkpoint: Path, tmp_path: Path) -> Iterator[AppFactory]:
    """Factory of test clients on a fresh store (``store=`` to reuse one); samples default to synthetic ones."""
    clients: list[TestClient] = []

    def factory(samples: list[Sample] | None = None, use_samples: bool = True, **settings: Any) -> TestClient:
        settings.setdefault("store", tmp_path / "store")
        settings.setdefault("model", str(tiny_checkpoint))
        app = create_app(
            ServerSettings(**settings),
            samples=(samples if samples is not None else synthetic_samples()) if use_samples else None,
        )
        client = TestClient(app, base_url="http://127.0.0.1:8000")
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    """A test client on a fresh store with three synthetic images."""
    return make_client()
