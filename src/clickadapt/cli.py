"""The ``clickadapt`` command line.

Each concern registers its own sub-commands from a ``command.py`` module in its folder, so this file
only assembles them: ``train`` (training), ``evaluate`` and ``bench`` (evaluation), ``serve``
(server), ``demo`` (the main job on built-in data).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "clickadapt.training.command",
    "clickadapt.evaluation.command",
    "clickadapt.evaluation.bench",
    "clickadapt.evaluation.latency",
    "clickadapt.server.command",
    "clickadapt.demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(prog="clickadapt", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue  # a concern not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"clickadapt {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
