"""Locust, headless: one master and one worker per core, each its own process.

Locust monkey-patches the standard library with gevent, so it never runs in our process: we
start `python -m locust` children and read the stats CSV the master rewrites every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from infra.stack.embedded import free_port
from infra.stack.storm.platform import stop_process

CSV_PREFIX = "locust"


@dataclass
class Swarm:
    master: asyncio.subprocess.Process
    workers: list[asyncio.subprocess.Process] = field(default_factory=list)


@dataclass(frozen=True)
class SwarmPlan:
    locustfile: Path
    host: str
    users: int
    spawn_rate: float
    run_time_s: int
    workers: int
    out_dir: Path
    env: dict[str, str]


@contextlib.asynccontextmanager
async def swarm(plan: SwarmPlan) -> AsyncIterator[Swarm]:
    """The master and its workers; every one still running at the end is stopped."""
    port = free_port()
    base = [sys.executable, "-m", "locust", "-f", str(plan.locustfile)]
    env = {**os.environ, **plan.env}
    master_argv = [
        *base,
        *("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)),
        *("--expect-workers", str(plan.workers), "--headless", "--only-summary"),
        *("-u", str(plan.users), "-r", str(plan.spawn_rate), "-t", f"{plan.run_time_s}s"),
        *("--host", plan.host, "--csv", str(plan.out_dir / CSV_PREFIX), "--csv-full-history"),
        # A visitor polls for minutes: on the run-time limit, let the current poll finish.
        *("--stop-timeout", "5"),
    ]
    worker_argv = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    procs: list[asyncio.subprocess.Process] = []
    try:
        procs.append(await _spawn(master_argv, env, plan.out_dir / "locust-master.log"))
        for i in range(plan.workers):
            log = plan.out_dir / f"locust-worker-{i}.log"
            procs.append(await _spawn(worker_argv, env, log))
        yield Swarm(procs[0], procs[1:])
    finally:
        for proc in reversed(procs):
            await stop_process(proc, timeout_s=15)


async def _spawn(argv: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )


@dataclass(frozen=True)
class LocustNumbers:
    """The master's aggregated stats, as of its last CSV write."""

    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    done: int = 0  # visitors whose every tab is over
    outcomes: dict[str, int] = field(default_factory=dict)


def read_stats(out_dir: Path) -> LocustNumbers:
    path = out_dir / f"{CSV_PREFIX}_stats.csv"
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return LocustNumbers()  # not written yet, or caught mid-rewrite: next second
    requests = failures = done = 0
    rps = 0.0
    outcomes: dict[str, int] = {}
    for row in rows:
        kind, name = row.get("Type", ""), row.get("Name", "")
        count = _int(row.get("Request Count"))
        if kind == "OUTCOME":
            outcomes[name] = count
        elif kind == "VISITOR":
            if name == "done":
                done = count
        elif name != "Aggregated":
            requests += count
            failures += _int(row.get("Failure Count"))
            rps += _float(row.get("Requests/s"))
    return LocustNumbers(requests, failures, rps, done, outcomes)


def read_failures(out_dir: Path) -> list[dict[str, str]]:
    path = out_dir / f"{CSV_PREFIX}_failures.csv"
    with contextlib.suppress(OSError), path.open(newline="") as f:
        return list(csv.DictReader(f))
    return []


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _float(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0
