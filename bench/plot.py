"""A horizontal bar chart as a standalone SVG file: the benchmarks' plots, no dependency."""

from __future__ import annotations

from html import escape
from pathlib import Path

BAR_HEIGHT = 28
GAP = 12
LABEL_WIDTH = 190
CHART_WIDTH = 460
MARGIN = 16
COLOURS = ("#8a8f98", "#b0b5bd", "#0a7cff", "#0058b8")


def bar_chart(path: Path, title: str, bars: list[tuple[str, float]], unit: str) -> Path:
    """Write `bars` (label, value) to `path` as an SVG chart; returns the path."""
    top = max((value for _, value in bars), default=1.0) or 1.0
    height = MARGIN * 2 + 30 + len(bars) * (BAR_HEIGHT + GAP)
    width = MARGIN * 2 + LABEL_WIDTH + CHART_WIDTH + 90
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="system-ui, sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{MARGIN}" y="{MARGIN + 14}" font-size="15" font-weight="600">'
        f"{escape(title)}</text>",
    ]
    for i, (label, value) in enumerate(bars):
        y = MARGIN + 30 + i * (BAR_HEIGHT + GAP)
        length = CHART_WIDTH * value / top
        colour = COLOURS[i % len(COLOURS)]
        text_y = y + BAR_HEIGHT * 0.68
        parts += [
            f'<text x="{MARGIN}" y="{text_y:.1f}">{escape(label)}</text>',
            f'<rect x="{MARGIN + LABEL_WIDTH}" y="{y}" width="{length:.1f}" '
            f'height="{BAR_HEIGHT}" fill="{colour}" rx="3"/>',
            f'<text x="{MARGIN + LABEL_WIDTH + length + 6:.1f}" y="{text_y:.1f}">'
            f"{value:,.0f} {escape(unit)}</text>",
        ]
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")
    return path
