"""``clickadapt train CONFIG``: source pre-training from a YAML experiment file."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="pre-train a source model from a YAML config",
        description="Pre-train a click-driven segmentation model. Works under torchrun for data-parallel training.",
    )
    parser.add_argument("config", help="training YAML, e.g. configs/train_brain.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from <output>/resume.pt")
    parser.add_argument("--output", help="override the config's output folder")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    parser.add_argument("--max-minutes", type=float, help="stop after this wall time")
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="override the config's device: auto (a GPU when torch sees one), cpu or cuda",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``clickadapt train``."""
    from clickadapt.training.config import load_training_config  # heavy imports only when the command runs
    from clickadapt.training.trainer import train

    config = load_training_config(args.config)
    if args.output:
        config.output = args.output
    if args.epochs is not None:
        config.optimisation.epochs = args.epochs
    if args.max_minutes is not None:
        config.optimisation.max_minutes = args.max_minutes
    if args.device is not None:
        config.device = args.device
    result = train(config, resume=args.resume, progress=not args.no_progress)
    print(
        json.dumps(
            {
                "best_checkpoint": str(result.best_checkpoint),
                "best_metrics": result.best_metrics,
                "wall_seconds": round(result.wall_seconds, 1),
            },
            indent=2,
        )
    )
    return 0
