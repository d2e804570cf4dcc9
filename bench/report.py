"""The bench's outputs: a rich table in the terminal and a PNG chart of the targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.targets import TARGETS, Target


def _value_text(target: Target, value: float | None) -> str:
    if value is None:
        return "—"
    unit = "" if target.unit == "×" else f" {target.unit}"
    return f"{value:,.3g}{unit}" if abs(value) < 1000 else f"{value:,.0f}{unit}"


def _commit(details: dict[str, Any]) -> str:
    commit = str(details.get("commit", ""))
    return commit[:10] + ("+dirty" if commit.endswith("+dirty") else "")


def print_table(result: dict[str, Any], details: dict[str, Any]) -> None:
    table = Table(title=f"flashsale bench ({details.get('generator', '')})")
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    for target in TARGETS:
        value = result.get(target.key)
        verdict = target.passes(value)
        mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[dim]not run[/]"}[verdict]
        goal = target.goal_text().strip()
        table.add_row(target.label, _value_text(target, value), goal, mark)
    m = result["machine"]
    caption = (
        f"{m['cpus']} × {m['cpu_model'] or 'cpu'}, Python {m['python']}, load "
        f"{m['load_avg_start'][0]} → {m['load_avg_end'][0]}, commit {_commit(details)}"
    )
    table.caption = caption
    Console().print(table)


def chart(result: dict[str, Any], path: Path, details: dict[str, Any]) -> Path:
    """One small panel per figure: the measured bar, green when it meets its target, red
    when not, and the target as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 4, figsize=(14, 9))
    for ax, target in zip(axes.flat, TARGETS, strict=True):
        value = result.get(target.key)
        verdict = target.passes(value)
        colour = {True: "#2e9e4f", False: "#d1403a", None: "#b0b5bd"}[verdict]
        ax.bar([0], [value or 0], color=colour, width=0.5)
        ax.axhline(target.goal, color="#222", linestyle="--", linewidth=1)
        ax.set_xticks([])
        ax.set_xlim(-0.6, 0.6)
        top = max(value or 0, target.goal) * 1.3 or 1
        ax.set_ylim(0, top)
        ax.set_title(target.label, fontsize=8.5)
        ax.text(0, (value or 0) + top * 0.02, _value_text(target, value), ha="center", fontsize=9)
        ax.text(0.42, target.goal, f" {target.goal_text()}", va="bottom", ha="right", fontsize=8)
    m = result["machine"]
    fig.suptitle(
        f"flashsale bench, {m['date']} — {m['cpus']} cores, {details.get('generator', '')}, "
        f"commit {_commit(details)}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
