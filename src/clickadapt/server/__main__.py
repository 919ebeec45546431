"""``python -m clickadapt.server [options]``: the same as ``clickadapt serve``, importing only the server."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clickadapt.server.command import register


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``serve`` options and run the server; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m clickadapt.server")
    subparsers = parser.add_subparsers(dest="command")
    register(subparsers)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.handler(args))
    except (ValueError, FileNotFoundError) as error:
        print(f"clickadapt serve: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
