"""The platform's memory during a storm: the resident set (VmRSS) of `flashsale up` and of
every process it started, read from /proc (Linux) at a fixed pace.

A process is named by what it runs, not by its pid: the supervisor restarts a child under a
new pid, and a soak asks whether *the shop* grew, whichever pid it had. A child with children
of its own (PostgreSQL's postmaster and its backends) also gets one summed series for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_VERSION_SUFFIX = re.compile(r"-v?\d+(\.\d+)+.*$")


@dataclass(frozen=True)
class RssSample:
    t: float  # seconds since the storm started
    process: str
    pid: int
    rss_kb: int


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:  # gone since the listing, or not ours to read: simply not sampled
        return None


def rss_kb(pid: int, proc: Path = PROC) -> int | None:
    """VmRSS of `pid` in kB, or None when it has gone (or is a zombie, which has none)."""
    status = _read(proc / str(pid) / "status")
    if status is None:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            with contextlib.suppress(ValueError, IndexError):
                return int(line.split()[1])
    return None


def parents(proc: Path = PROC) -> dict[int, int]:
    """pid -> parent pid of every process we can see."""
    result: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read(entry / "stat")
        if stat is None:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after
        # the last ")".
        fields = stat.rsplit(")", 1)[-1].split()
        with contextlib.suppress(ValueError, IndexError):
            result[int(entry.name)] = int(fields[1])
    return result


def process_name(pid: int, proc: Path = PROC) -> str:
    """`python -m shop.worker` -> "shop.worker"; `/x/bin/valkey-server ...` -> "valkey-server"."""
    raw = _read(proc / str(pid) / "cmdline") or ""
    argv = [a for a in raw.split("\0") if a]
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    if argv:
        # PostgreSQL retitles its processes ("postgres: checkpointer"): keep the program only.
        program = os.path.basename(argv[0].split(":")[0].split()[0])
        # A versioned binary ("tansu-v0.6.0-510f3e2") keeps its series across upgrades.
        return _VERSION_SUFFIX.sub("", program) or program
    return f"pid {pid}"


def _descendants(pid: int, children: Mapping[int, Sequence[int]]) -> list[int]:
    found, todo = [], list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, ()))
    return found


def sample_tree(root: int, t: float, proc: Path = PROC) -> list[RssSample]:
    """One sample of `root` (named "flashsale up"), each of its children, and for a child
    with children of its own, their sum as "<child> children"."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents(proc).items():
        children.setdefault(ppid, []).append(pid)
    samples = []
    if (own := rss_kb(root, proc)) is not None:
        samples.append(RssSample(t, "flashsale up", root, own))
    for child in sorted(children.get(root, ())):
        name = process_name(child, proc)
        if (kb := rss_kb(child, proc)) is None:
            continue
        samples.append(RssSample(t, name, child, kb))
        below = [k for p in _descendants(child, children) if (k := rss_kb(p, proc)) is not None]
        if below:
            samples.append(RssSample(t, f"{name} children", child, sum(below)))
    return samples


def by_process(samples: Iterable[RssSample]) -> dict[str, list[RssSample]]:
    """The samples of each process, in time order (the first sample's order of processes)."""
    series: dict[str, list[RssSample]] = {}
    for sample in sorted(samples, key=lambda s: s.t):
        series.setdefault(sample.process, []).append(sample)
    return series


WARM_S = 60.0  # a process's first minute fills its caches and pools: growth is judged after


def growth(samples: Iterable[RssSample]) -> dict[str, dict[str, float | int]]:
    """Per process: first, last and highest RSS (kB), last ÷ first, the sample count, and
    the same after the first minute (``warm_kb``, ``last_vs_warm``: the first sample at or
    past WARM_S, or the first of all when the storm was shorter). A process that leaks keeps
    growing after its warm-up; one that only filled its pools does not."""
    result: dict[str, dict[str, float | int]] = {}
    for name, series in by_process(samples).items():
        first, last = series[0].rss_kb, series[-1].rss_kb
        warm = next((s.rss_kb for s in series if s.t >= WARM_S), first)
        result[name] = {
            "first_kb": first,
            "last_kb": last,
            "max_kb": max(s.rss_kb for s in series),
            "last_vs_first": round(last / first, 3) if first else 0.0,
            "warm_kb": warm,
            "last_vs_warm": round(last / warm, 3) if warm else 0.0,
            "samples": len(series),
        }
    return result


async def sample_every(
    root: int, started: float, every_s: float, into: list[RssSample], proc: Path = PROC
) -> None:
    """Append a sample of `root`'s tree to `into` now and every `every_s` until cancelled
    (the caller takes one more at the very end). Times are ``time.monotonic() - started``."""
    while True:
        into.extend(sample_tree(root, time.monotonic() - started, proc))
        await asyncio.sleep(every_s)
