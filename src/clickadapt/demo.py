"""``clickadapt demo``: the main job on the built-in data, no downloads needed.

Runs the shipped brain model over the built-in stream of brain MRI slices (BRATS T1c and MSLUB
FLAIR, a shift from the FLAIR glioma source domain) with a simulated user, once without adaptation
(``frozen``) and once with OAIMS, then writes the report and prints the summary table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from clickadapt.evaluation.command import (
    load_model,
    parse_name_list,
    print_summary,
    run_evaluation,
)
from clickadapt.evaluation.config import select_strategies
from clickadapt.evaluation.report import write_results

DEMO_TASK = "brain"
DEMO_STRATEGIES = ("frozen", "oaims")
DEMO_USER = "oaims"
DEMO_BUDGET = 10
DEMO_SEED = 0
DEMO_OUTPUT = Path("outputs") / "demo"


def run_demo(
    output: Path = DEMO_OUTPUT,
    strategies: tuple[str, ...] | list[str] = DEMO_STRATEGIES,
    budget: int = DEMO_BUDGET,
    limit: int | None = None,
    seed: int = DEMO_SEED,
    progress: bool = True,
) -> Path:
    """Evaluate the shipped brain model on the built-in demo stream and write the report.

    Args:
        output: Output folder.
        strategies: Strategy names to compare.
        budget: Clicks per image.
        limit: Use only the first N demo slices.
        seed: Seed of the stream order and the simulated user.
        progress: Progress bars on a terminal.

    Returns:
        The output folder.

    Raises:
        FileNotFoundError: If the shipped brain model is missing (the message says how to train it).
        ValueError: If a strategy name is unknown.
    """
    from clickadapt.data.demo import load_demo_samples

    specs = select_strategies([], list(strategies))
    loaded = load_model(DEMO_TASK)
    samples = load_demo_samples()[:limit]
    results = run_evaluation(
        loaded.model,
        loaded.task,
        samples,
        None,
        specs,
        [seed],
        [seed],
        budget,
        DEMO_USER,
        click_sigma=loaded.meta.preprocessing.click_sigma,
        progress=progress,
    )
    write_results(results, output)
    return output


def handle_demo(args: argparse.Namespace) -> int:
    """Handler of ``clickadapt demo``."""
    strategies = parse_name_list(args.strategies, "--strategies")
    output = run_demo(
        Path(args.output), strategies, budget=args.budget, limit=args.limit, progress=not args.no_progress
    )
    print_summary(output)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="run frozen vs OAIMS on the built-in brain MRI stream and write a report",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--output", default=str(DEMO_OUTPUT), help=f"output folder (default {DEMO_OUTPUT})")
    parser.add_argument(
        "--strategies", default=",".join(DEMO_STRATEGIES), help="comma-separated strategies (default frozen,oaims)"
    )
    parser.add_argument("--budget", type=int, default=DEMO_BUDGET, help="clicks per image (default 10)")
    parser.add_argument("--limit", type=int, help="use only the first N demo slices")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=handle_demo)
