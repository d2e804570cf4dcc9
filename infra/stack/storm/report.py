"""What a storm leaves behind: CSVs, PNG charts (matplotlib) and a Markdown report."""

from __future__ import annotations

import csv
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: a storm may run on a server without any display

import matplotlib.pyplot as plt
import orjson

from infra.stack.storm.invariants import Check, outcome_counts
from infra.stack.storm.rss import RssSample, by_process, growth

TAB_FIELDS = (
    "product",
    "behaviour",
    "outcome",
    "join_sent",
    "join_done",
    "join_state",
    "join_position",
    "draw",
    "admitted_expiry",
    "admitted_seen",
    "wait_s",
    "polls",
    "joins",
    "lost",
    "refreshes",
    "refresh_new_place",
    "refresh_moved_back",
    "life_s",
    "late_s",
    "max_gap_s",
    "replica",
)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def figures(tabs: Sequence[Mapping[str, Any]]) -> dict[str, float | int | None]:
    """The headline numbers of the visitors' side of a storm."""
    admitted = [t for t in tabs if t.get("admitted_expiry") is not None]
    polls = [float(t.get("polls") or 0) for t in admitted]
    waits = [float(t["wait_s"]) for t in admitted if t.get("wait_s") is not None]
    return {
        "tabs": len(tabs),
        "admitted": len(admitted),
        "polls_per_admitted_mean": statistics.fmean(polls) if polls else None,
        "polls_per_admitted_p95": percentile(polls, 0.95),
        "time_in_line_p50_s": percentile(waits, 0.5),
        "time_in_line_p95_s": percentile(waits, 0.95),
        "time_in_line_max_s": max(waits) if waits else None,
    }


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def charts(
    out: Path,
    timeline: Sequence[Mapping[str, Any]],
    tabs: Sequence[Mapping[str, Any]],
    products: Sequence[str],
) -> list[tuple[str, str]]:
    """The five charts; returns (title, file name) pairs for the report."""
    made = []
    t = [float(r["t"]) for r in timeline]

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for p in products:
        ax.plot(t, [r.get(f"{p}.waiting", 0) for r in timeline], label=p)
    ax.set(xlabel="seconds since the storm started", ylabel="visitors waiting")
    ax.legend()
    _save(fig, out / "line_length.png")
    made.append(("Line length over time", "line_length.png"))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for p in products:
        admitted = [float(r.get(f"{p}.admitted", 0)) for r in timeline]
        rates = [
            (admitted[i] - admitted[i - 1]) / max(t[i] - t[i - 1], 1e-9) if i else 0.0
            for i in range(len(t))
        ]
        ax.plot(t, rates, label=p)
    ax.set(xlabel="seconds since the storm started", ylabel="admissions per second")
    ax.legend()
    _save(fig, out / "admissions_per_s.png")
    made.append(("Admissions per second", "admissions_per_s.png"))

    waits = [float(x["wait_s"]) for x in tabs if x.get("wait_s") is not None]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.hist(waits or [0.0], bins=40)
    ax.set(xlabel="seconds from first join to admission", ylabel="admitted tabs")
    _save(fig, out / "time_in_line.png")
    made.append(("Time in line (admitted tabs)", "time_in_line.png"))

    polls = [int(x.get("polls") or 0) for x in tabs]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.hist(polls or [0], bins=range(0, max(polls or [0]) + 2))
    ax.set(xlabel="status polls", ylabel="tabs")
    _save(fig, out / "polls_per_visitor.png")
    made.append(("Status polls per tab", "polls_per_visitor.png"))

    counts = outcome_counts(tabs)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(list(counts), list(counts.values()))
    ax.set(ylabel="tabs")
    _save(fig, out / "outcomes.png")
    made.append(("Outcomes", "outcomes.png"))
    return made


def write_rss(out: Path, samples: Sequence[RssSample]) -> list[str]:
    """rss.csv (every sample), rss.json (the samples and each process's growth), a chart,
    and the report's Markdown section."""
    rows = [{"t": round(s.t, 1), "process": s.process, "pid": s.pid, "rss_kb": s.rss_kb}
            for s in samples]  # fmt: skip
    write_csv(out / "rss.csv", rows, ("t", "process", "pid", "rss_kb"))
    grown = growth(samples)
    (out / "rss.json").write_bytes(
        orjson.dumps({"growth": grown, "samples": rows}, option=orjson.OPT_INDENT_2)
    )
    lines = ["", "## Memory of the platform (RSS)", ""]
    if not samples:
        lines.append("Not sampled: the storm ran against a platform it did not start.")
        return lines
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, series in by_process(samples).items():
        ax.plot([s.t for s in series], [s.rss_kb / 1024 for s in series], label=name)
    ax.set(xlabel="seconds since the storm started", ylabel="RSS, MB")
    ax.legend(fontsize="x-small", ncol=2)
    _save(fig, out / "rss.png")
    lines += [
        "VmRSS of `flashsale up` and each process it started, sampled at the start, every "
        "interval and after the drain (`rss.csv`, `rss.json`).",
        "",
        "| process | first, MB | after 1 min, MB | last, MB | highest, MB | last ÷ first "
        "| last ÷ after 1 min | samples |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {g['first_kb'] / 1024:,.1f} | {g['warm_kb'] / 1024:,.1f} | "
        f"{g['last_kb'] / 1024:,.1f} | {g['max_kb'] / 1024:,.1f} | {g['last_vs_first']:.3f} | "
        f"{g['last_vs_warm']:.3f} | {g['samples']} |"
        for name, g in grown.items()
    ]
    lines += ["", "![RSS over time](rss.png)"]
    return lines


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def write_report(
    out: Path,
    *,
    title: str,
    settings: Mapping[str, Any],
    summary: Mapping[str, Any],
    checks: Sequence[Check],
    timeline: Sequence[Mapping[str, Any]],
    tabs: Sequence[Mapping[str, Any]],
    products: Sequence[str],
    failures: Sequence[Mapping[str, str]],
    rss: Sequence[RssSample] = (),
) -> Path:
    fields = ["t", *sorted({k for r in timeline for k in r if k != "t"})]
    write_csv(out / "timeline.csv", timeline, fields)
    write_csv(out / "tabs.csv", tabs, TAB_FIELDS)
    made = charts(out, timeline, tabs, products)
    lines = [f"# {title}", "", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in settings.items()]
    lines += ["", "## Invariants", ""]
    lines += [f"- **{'PASS' if c.ok else 'FAIL'}** {c.name}: {c.detail}" for c in checks]
    lines += ["", "## Figures", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in summary.items()]
    lines += ["", "## Outcomes (per tab)", "", "| outcome | tabs |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in sorted(outcome_counts(tabs).items())]
    if failures:
        lines += ["", "## Failed requests (Locust)", "", "| request | error | count |"]
        lines += ["|---|---|---:|"]
        lines += [
            f"| {f.get('Method', '')} {f.get('Name', '')} | {f.get('Error', '')} | "
            f"{f.get('Occurrences', '')} |"
            for f in failures
        ]
    lines += write_rss(out, rss)
    lines += ["", "## Charts", ""]
    lines += [f"### {name}\n\n![{name}]({file})\n" for name, file in made]
    lines += [
        "## Files",
        "",
        "`timeline.csv` (admin stats each second), `tabs.csv` (what every tab saw), "
        "`locust_*.csv` (Locust's own stats), `rss.csv` and `rss.json` (the platform's memory), "
        "`records/` (raw per-worker JSON lines), logs.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
