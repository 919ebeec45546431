"""The Markdown page of a one-off study script under ``bench/`` (``crop_scale.py``, ``channel_choice.py``).

A study measures one question on real data and writes one page: its title, what it measures (the script's
docstring), how to reproduce it (command, date, machine), the data, a Dice table and the paired differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from clickadapt.evaluation.machine import cpu_and_versions


def study_summary(docstring: str | None) -> str:
    """The second paragraph of a study script's docstring (what it measures), on one line."""
    return (docstring or "").split("\n\n")[1].replace("\n", " ").replace("``", "`")


def write_study_page(
    output: Path,
    title: str,
    docstring: str | None,
    command: str,
    data_line: str,
    table: Sequence[str],
    findings: Sequence[str],
    machine_note: str = "",
    closing: Sequence[str] = (),
) -> None:
    """Write a study's page to ``output`` and say so.

    Args:
        output: The Markdown file (``bench/results/<study>.md``).
        title: The page's heading.
        docstring: The script's module docstring; its second paragraph says what the study measures.
        command: The command that reproduces the page.
        data_line: The images, model and settings, one bullet's text.
        table: The Markdown table's lines (header, separator, rows).
        findings: Bullet lines (paired differences with their intervals and n).
        machine_note: Appended to the machine line (threads, load).
        closing: Further paragraphs' lines.
    """
    machine = cpu_and_versions()
    lines = [
        f"# {title}",
        "",
        study_summary(docstring),
        "",
        f"- Command: `{command}`; date {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- Machine: {machine['cpu']}, {machine['cpus']} CPUs; torch {machine['torch']}, Python {machine['python']}"
        + (f"; {machine_note}" if machine_note else ""),
        f"- {data_line}",
        "",
        *table,
        "",
        *findings,
        "",
        *closing,
    ]
    if closing:
        lines.append("")
    output.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {output}")
