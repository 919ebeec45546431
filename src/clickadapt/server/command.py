"""``clickadapt serve``: the web application on 127.0.0.1 (by default on the demo images and shipped brain model)."""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from clickadapt.server.settings import DEFAULT_PORT, DEFAULT_STORE, LOOPBACK_HOST, ServerSettings

PASSED_AS_GIVEN = (
    *("data", "model", "store", "host", "port", "token", "strategy", "image_size", "device", "sentinel", "channel"),
    *("max_image_pixels", "max_volume_voxels", "reference_name"),
)
"""Options that become the server setting of the same name unchanged (when given)."""
SKIPPED_FILES_SHOWN = 10
"""Start-up names at most this many skipped data files (all of them are logged)."""


def register(subparsers: Any) -> None:
    """Add the ``serve`` sub-command."""
    parser = subparsers.add_parser(
        "serve",
        help="label images in the browser while the model learns from your clicks",
        description=(
            "Start the web application (FastAPI + uvicorn) and print its address. Without arguments it serves "
            "the built-in demo images with the shipped brain model on 127.0.0.1. Every option can also be set "
            "as an environment variable CLICKADAPT_<OPTION>."
        ),
    )
    parser.add_argument("--data", help="folder of images to label (PNG, JPEG, TIFF, WebP, NIfTI, DICOM); default: demo")
    parser.add_argument("--model", help="checkpoint path, or 'brain' / 'fundus' for a shipped model (default brain)")
    parser.add_argument("--store", help=f"datastore folder (default ./{DEFAULT_STORE})")
    parser.add_argument("--host", help=f"interface to listen on (default {LOOPBACK_HOST}); others need a token")
    parser.add_argument("--port", type=int, help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    parser.add_argument("--token", help="access token (generated and printed when --host is not loopback)")
    parser.add_argument(
        "--strategy", help="adaptation strategy (default oaims; see `python -m bench` and bench/README.md)"
    )
    parser.add_argument("--no-adaptation", action="store_true", help="start with adaptation switched off")
    parser.add_argument(
        "--no-autosave",
        action="store_true",
        help="do not save the weights after every updating click (faster clicks; a restart resumes from the "
        "last finished image)",
    )
    parser.add_argument("--max-upload-mb", type=float, help="largest accepted upload in MB (default 64)")
    parser.add_argument(
        "--max-image-pixels", type=int, help="largest 2D picture a file may declare, height × width (default 4096²)"
    )
    parser.add_argument("--max-volume-voxels", type=int, help="largest volume a file may declare (default 512³)")
    parser.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="host name the server answers to besides loopback names (no-token mode; repeatable)",
    )
    parser.add_argument(
        "--channel",
        type=int,
        choices=(0, 1, 2),
        help="for a grey model, segment this channel of colour (multichannel) pictures instead of their grey "
        "average, e.g. 1 = FLAIR of the TCGA-LGG kaggle_3m TIFFs (pre-contrast, FLAIR, post-contrast)",
    )
    parser.add_argument("--image-size", type=int, help="side of the preprocessed images (default: the model's)")
    parser.add_argument("--device", help="torch device of the model (default cpu)")
    parser.add_argument(
        "--sentinel", help="folder of labelled source images (images/ + masks/) for the safety layer's source sentinel"
    )
    parser.add_argument(
        "--rehearsal",
        help="folder of labelled source images (images/ + masks/) replayed after each finished image",
    )
    parser.add_argument(
        "--source-domain",
        action="append",
        metavar="PATTERN",
        help=(
            "glob over image names (e.g. 'site-A/*') marking images of the model's source domain: they adapt only "
            "a per-image copy of the base model and never change the shared model (repeatable)"
        ),
    )
    parser.add_argument(
        "--reference-name",
        metavar="PATTERN",
        help="glob over file names choosing the reference label volume of folders that hold several (e.g. "
        "'*annotator1*'); folders where none matches keep the default: their only label volume, brain masks aside",
    )
    parser.set_defaults(handler=run_serve)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The server settings of a parsed command line (options not given fall back to the environment)."""
    overrides: dict[str, Any] = {}
    for name in PASSED_AS_GIVEN:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "allowed_host", None):
        overrides["allowed_hosts"] = list(args.allowed_host)
    if getattr(args, "rehearsal", None) is not None:
        overrides["rehearsal"] = args.rehearsal
    if getattr(args, "source_domain", None):
        overrides["source_domains"] = list(args.source_domain)
    if args.no_adaptation:
        overrides["adaptation"] = False
    if getattr(args, "no_autosave", False):
        overrides["autosave_every_click"] = False
    if args.max_upload_mb is not None:
        overrides["max_upload_bytes"] = int(args.max_upload_mb * 1024 * 1024)
    return ServerSettings(**overrides).with_token_if_exposed()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one).

    Raises:
        ValueError: One line saying why it cannot listen (port in use, address not available…).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio switches Nagle's algorithm off (TCP_NODELAY) only on accepted
    # sockets whose protocol says TCP; without it every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        hint = " (another server is running there; stop it or choose another --port)" if port else ""
        reason = error.strerror or str(error)
        raise ValueError(f"cannot listen on {host}:{port}: {reason}{hint}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run_serve(args: argparse.Namespace) -> int:
    """Handler of ``clickadapt serve``: build the app, bind, print the address, serve until interrupted."""
    import uvicorn

    from clickadapt.models.checkpoint import CheckpointError
    from clickadapt.server.app import create_app
    from clickadapt.server.datastore import DatastoreError
    from clickadapt.server.service.catalogue import summarise_skipped

    settings = settings_from_args(args)
    sock = bind_socket(settings.host, settings.port)  # first: a port in use is reported at once
    try:
        app = create_app(settings)
    except (CheckpointError, DatastoreError) as error:  # reported as a clear start-up error by the CLI
        sock.close()
        raise ValueError(str(error)) from error
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"http://{shown_host}:{port}/"
    if settings.token is not None:
        address += f"?token={settings.token}"
    service = app.state.service
    print(
        f"clickadapt serve: open {address}\n"
        f"  model {service.models.task.name} version {service.models.state.version}, "
        f"strategy {service.models.strategy_name if service.models.adaptation else 'off'}, "
        f"{len(service.catalogue.list_images())} images, store {service.store.folder.resolve()}"
        + (f", channel {settings.channel} of colour pictures" if settings.channel is not None else ""),
        flush=True,
    )
    if service.catalogue.data_warning is not None:
        print(f"  warning, data folder: {service.catalogue.data_warning}", flush=True)
    skipped = service.catalogue.skipped
    if skipped:
        lines = "\n    ".join(summarise_skipped(skipped, singles=SKIPPED_FILES_SHOWN))
        print(f"  {len(skipped)} file(s) of the data folder skipped:\n    {lines}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # pragma: no cover - interactive stop
        pass
    finally:
        sock.close()
    sys.stdout.flush()
    return 0
