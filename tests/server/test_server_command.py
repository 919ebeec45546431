"""``clickadapt serve``: options, environment variables, safety defaults and clear start-up errors."""

from __future__ import annotations

import argparse
import asyncio
import socket
from pathlib import Path

import pytest

from clickadapt.paths import resolve_model_spec, shipped_model_path
from clickadapt.server.command import bind_socket, register, settings_from_args
from clickadapt.server.service import AnnotationService
from clickadapt.server.settings import ServerSettings, is_loopback


def parse(*arguments: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *arguments])


def test_defaults_are_loopback_demo_and_shipped_brain_model(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "TOKEN", "DATA", "MODEL", "STORE"):
        monkeypatch.delenv(f"CLICKADAPT_{name}", raising=False)
    settings = settings_from_args(parse())
    assert settings.host == "127.0.0.1" and settings.token is None and settings.data is None
    assert settings.model == "brain" and settings.max_upload_bytes == 64 * 1024 * 1024
    if shipped_model_path("brain").is_file():
        assert resolve_model_spec("brain") == shipped_model_path("brain")
    else:
        with pytest.raises(FileNotFoundError, match="shipped model has not been built yet"):
            resolve_model_spec("brain")


def test_options_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLICKADAPT_STRATEGY", "post")
    settings = settings_from_args(
        parse("--data", str(tmp_path), "--store", str(tmp_path / "s"), "--max-upload-mb", "2", "--no-adaptation")
    )
    assert settings.data == tmp_path and settings.store == tmp_path / "s"
    assert settings.max_upload_bytes == 2 * 1024 * 1024 and settings.adaptation is False
    assert settings.strategy == "post"  # from the environment
    assert settings.source_domains == []
    kept = settings_from_args(parse("--source-domain", "site-A/*", "--source-domain", "demo*"))
    assert kept.source_domains == ["site-A/*", "demo*"]
    with pytest.raises(ValueError, match="source-domain pattern must not be empty"):
        ServerSettings(source_domains=["site-A/*", " "])
    assert settings.autosave_every_click is True
    assert settings_from_args(parse("--no-autosave")).autosave_every_click is False
    assert settings.channel is None and settings_from_args(parse("--channel", "1")).channel == 1
    with pytest.raises(SystemExit):
        parse("--channel", "3")
    assert settings.reference_name is None
    assert settings_from_args(parse("--reference-name", "*rater1*")).reference_name == "*rater1*"


def test_exposed_host_gets_a_generated_token_or_keeps_the_given_one() -> None:
    generated = settings_from_args(parse("--host", "0.0.0.0"))
    assert generated.token is not None and len(generated.token) >= 24
    assert settings_from_args(parse("--host", "0.0.0.0", "--token", "my-long-token")).token == "my-long-token"
    with pytest.raises(ValueError, match="at least 8 characters"):
        ServerSettings(token="short")
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


def test_missing_model_and_data_folder_are_clear_errors(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model checkpoint .*missing\.pt does not exist"):
        AnnotationService(ServerSettings(model=str(tmp_path / "missing.pt"), store=tmp_path / "s"))
    with pytest.raises(FileNotFoundError, match=r"data folder .*nowhere does not exist"):
        AnnotationService(ServerSettings(model=str(tiny_checkpoint), store=tmp_path / "s", data=tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="unknown adaptation strategy 'magic'"):
        AnnotationService(ServerSettings(model=str(tiny_checkpoint), store=tmp_path / "s2", strategy="magic"))


def test_a_store_refuses_another_base_model(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from server_helpers import synthetic_samples, write_tiny_checkpoint

    AnnotationService(ServerSettings(model=str(tiny_checkpoint), store=tmp_path / "s"), synthetic_samples(1)).close()
    other = write_tiny_checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(ValueError, match="was started with another base model"):
        AnnotationService(ServerSettings(model=str(other), store=tmp_path / "s"), synthetic_samples(1))


def test_bind_socket_picks_a_free_loopback_port() -> None:
    sock = bind_socket("127.0.0.1", 0)
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0
        with socket.create_connection((host, port), timeout=5):
            pass
    finally:
        sock.close()


def test_connections_accepted_on_the_bound_socket_have_nagle_off() -> None:
    """asyncio (so uvicorn) sets TCP_NODELAY only on accepted sockets whose protocol is IPPROTO_TCP; without it
    each answer on a keep-alive connection waited ~40 ms for the client's delayed ACK."""
    sock = bind_socket("127.0.0.1", 0)
    nodelay: list[int] = []

    async def serve_one() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted = writer.get_extra_info("socket")
            nodelay.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        async with server:
            _reader, writer = await asyncio.open_connection(*sock.getsockname())
            await _reader.read()  # the server closes the connection after looking at it
            writer.close()

    try:
        assert sock.proto == socket.IPPROTO_TCP
        asyncio.run(serve_one())
    finally:
        sock.close()
    assert nodelay and nodelay[0] != 0
