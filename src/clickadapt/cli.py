"""The ``clickadapt`` command line.

Each concern registers its own sub-command from a ``command.py``-like module in its folder; this file only
names them. Those modules import torch, FastAPI or matplotlib, so only the one sub-command being run is
imported: ``clickadapt --help`` and ``import clickadapt.cli`` stay light (``tests/test_light_imports.py``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SubCommand:
    """A sub-command: its name, the module whose ``register(subparsers)`` defines it, and its one-line help.

    The help is repeated here so that the top-level ``--help`` needs no import; a test checks that it is the
    one the module registers.
    """

    name: str
    module: str
    help: str


SUB_COMMANDS = (
    SubCommand("train", "clickadapt.training.command", "pre-train a source model from a YAML config"),
    SubCommand(
        "evaluate",
        "clickadapt.evaluation.command",
        "compare adaptation strategies on a target stream with a simulated user",
    ),
    SubCommand(
        "serve", "clickadapt.server.command", "label images in the browser while the model learns from your clicks"
    ),
    SubCommand("demo", "clickadapt.demo", "run frozen vs OAIMS on the built-in brain MRI stream and write a report"),
)
COMMAND_MODULES = tuple(command.module for command in SUB_COMMANDS)


def build_parser(command: str | None = None, *, light: bool = False) -> argparse.ArgumentParser:
    """The top-level parser.

    Args:
        command: The sub-command about to run: only its module is imported and its full arguments defined;
            the others are listed by name and help only.
        light: With ``command=None``, list every sub-command without importing any (``--help``); otherwise
            (the default) every module is imported and every sub-command fully defined.
    """
    parser = argparse.ArgumentParser(prog="clickadapt", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for sub_command in SUB_COMMANDS:
        full = sub_command.name == command if command is not None or light else True
        if full:
            importlib.import_module(sub_command.module).register(subparsers)
        else:
            subparsers.add_parser(sub_command.name, help=sub_command.help, add_help=False)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (its first word that is not an option), if any."""
    names = {sub_command.name for sub_command in SUB_COMMANDS}
    for word in argv:
        if not word.startswith("-"):
            return word if word in names else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen_command(arguments), light=True)
    args = parser.parse_args(arguments)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"clickadapt {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
