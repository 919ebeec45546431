"""The command line of the latency benchmark: ``python bench/latency.py`` (or ``python -m bench.latency``)."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import bench.speed
from bench.speed.benchmark import run_benchmark
from bench.speed.settings import STREAMS, LatencySettings
from clickadapt.clicks.simulators import make_simulated_user

PROGRAM = "bench/latency.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench/latency.py``."""
    defaults = LatencySettings()
    parser.add_argument("--device", default=defaults.device, help="torch device (default cpu; e.g. cuda)")
    parser.add_argument("--stream-limit", type=int, default=defaults.stream_limit, help="images per stream")
    parser.add_argument("--budget", type=int, default=defaults.budget, help="clicks per image")
    parser.add_argument("--user", default=defaults.user, help="simulated user (oaims, center, deepest)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="stream order, clicks and strategy seed")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: all cores)")
    parser.add_argument("--brain-model", default=defaults.brain_model, help="brain checkpoint (default: shipped)")
    parser.add_argument("--fundus-model", default=defaults.fundus_model, help="fundus checkpoint (default: shipped)")
    parser.add_argument("--data-root", type=Path, help="folder of the real datasets (default ../shared/data)")
    parser.add_argument("--tasks", default=",".join(defaults.tasks), help="comma-separated: brain,fundus")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP API measurement")
    parser.add_argument("--no-tuning", action="store_true", help="skip the CPU-tuning variants")
    parser.add_argument("--no-backbones", action="store_true", help="skip the backbone variants")
    parser.add_argument(
        "--short-images", type=int, default=defaults.short_images, help="images for backbones and thread count"
    )
    parser.add_argument("--compile", action="store_true", help="also try torch.compile")
    parser.add_argument("--in-process", action="store_true", help="no fresh process per measurement")
    parser.add_argument("--output", type=Path, default=defaults.output, help=f"report (default {defaults.output})")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``bench/latency.py``."""
    description = (bench.speed.__doc__ or "").splitlines()[0] or None
    parser = argparse.ArgumentParser(prog=PROGRAM, description=description)
    add_arguments(parser)
    return parser


def settings_from_args(args: argparse.Namespace) -> LatencySettings:
    """The settings of a parsed command line.

    Raises:
        ValueError: For an unknown task or an invalid value (naming it).
    """
    tasks = [name.strip() for name in args.tasks.split(",") if name.strip()]
    unknown = [name for name in tasks if name not in STREAMS]
    if unknown or not tasks:
        raise ValueError(f"--tasks: unknown task(s) {unknown or args.tasks!r}; known: {', '.join(STREAMS)}")
    return LatencySettings(
        device=args.device,
        stream_limit=args.stream_limit,
        budget=args.budget,
        user=args.user,
        seed=args.seed,
        threads=args.threads,
        brain_model=args.brain_model,
        fundus_model=args.fundus_model,
        data_root=args.data_root,
        tasks=tasks,
        http=not args.no_http,
        tuning=not args.no_tuning,
        backbones=not args.no_backbones,
        short_images=args.short_images,
        compile=args.compile,
        isolate=not args.in_process,
        output=args.output,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bench/latency.py``: measure, write the report, return the exit status.

    Args:
        argv: The options (default ``sys.argv[1:]``); they are recorded in the report as
            ``python bench/latency.py …``.

    Returns:
        0, or 2 after printing an error for invalid settings or a missing file.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    command = shlex.join(["python", PROGRAM, *arguments])
    try:
        settings = settings_from_args(args)
        make_simulated_user(settings.user, 0)  # validates the name before any work
        run_benchmark(settings, command)
    except (ValueError, FileNotFoundError) as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {settings.output} and {settings.output.with_suffix('.json')}")
    return 0
