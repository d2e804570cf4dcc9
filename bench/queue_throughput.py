"""Queue server throughput against two baselines, measured in one run on this machine.

    python -m bench.queue_throughput          # or: make bench

Targets, one at a time, each a subprocess with the same uvicorn settings and one worker
(:func:`infra.web.serve.serve`):

- ``bare``: a Starlette hello-world, the ceiling of Python + uvicorn here;
- ``naive``: Starlette awaiting ZADD then ZRANK with redis-py (ANCHORS.md's baseline);
- ``ours``: the queue server, ``POST /queue/{p}/join`` and ``GET /queue/{p}/status``.

The sale is FIFO, open, with stock to spare and the join limit off, and its line already holds
``--line`` visitors (100,000 by default), so rank costs what it costs in a real drop; status
rotates tickets spread along that line. Prints absolute numbers and the ratios ours/bare and
ours/naive, and writes ``bench/results/queue_throughput.json``. Valkey is the embedded one,
or ``FLASHSALE_REDIS_URL`` when set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from bench.baselines import NAIVE_LINE_KEY
from bench.loadgen import Load, Measurement, measure, wrk_path
from bench.plot import bar_chart
from bench.suite import machine as suite_machine
from infra.constants import SALES_KEY
from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.stack.embedded import EmbeddedStack, free_port
from infra.web.metrics import Metrics
from scheduler.admission import Admissions
from shop.sales import create_sale
from token_gate.codec import TokenCodec, new_visitor_id

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "queue_throughput.json"
PREFILL_CHUNK = 10_000
READY_TIMEOUT_S = 30.0
WARMUP_S = 2.0
# ANCHORS.md, measured with wrk -c64 on a 2-core machine, one uvicorn worker.
ANCHOR_RPS = {"bare": 35_500, "naive": 7_700, "naive_pipelined": 9_000}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--line", type=int, default=100_000, help="visitors already in line")
    parser.add_argument("--tickets", type=int, default=1_000, help="tickets rotated by status")
    parser.add_argument("--tool", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


# --- the sale ------------------------------------------------------------------------------


async def _prepare_sale(redis: Redis, line: int) -> SaleKeys:
    scripts = SaleScripts(redis)
    start = datetime.fromtimestamp(time.time() - 60, tz=UTC).isoformat()
    keys = await create_sale(
        redis,
        scripts,
        {
            "id": f"bench-{secrets.token_hex(6)}",
            "name": "Benchmark sneaker",
            "price": 12900,
            "currency": "EUR",
            "stock": 1_000_000_000,
            "sale_start": start,
            "queue_mode": "fifo",
        },
    )
    # Opened as the scheduler opens it (open() mints nothing: any codec will do). No scheduler
    # runs during the bench, so nobody is admitted or swept and the line only grows.
    admissions = Admissions(redis, scripts, TokenCodec(("bench" * 4,)), Metrics("bench"))
    if await admissions.open(keys.product_id) != "done":
        raise RuntimeError("the benchmark sale did not open")
    for low in range(0, line, PREFILL_CHUNK):
        high = min(line, low + PREFILL_CHUNK)
        ours = {new_visitor_id(): seq for seq in range(low + 1, high + 1)}
        naive = {new_visitor_id(): time.time() - 3600 + seq / 1e6 for seq in range(low, high)}
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.line, ours)
            pipe.zadd(NAIVE_LINE_KEY, naive)
            await pipe.execute()
    # Joins during the bench take the sequence numbers after the prefilled ones.
    await redis.set(keys.seq, line)
    return keys


async def _tickets(redis: Redis, keys: SaleKeys, codec: TokenCodec, count: int) -> list[str]:
    """Tickets of visitors spread evenly along the line, from the front to the back."""
    size = await redis.zcard(keys.line)
    step = max(1, size // count)
    tickets = []
    for rank in range(0, size, step):
        visitor = (await redis.zrange(keys.line, rank, rank))[0]
        tickets.append(codec.mint_ticket(visitor, keys.product_id))
    return tickets[:count]


async def _cleanup(redis: Redis, keys: SaleKeys) -> None:
    await redis.delete(*keys.all_data(), NAIVE_LINE_KEY)
    await redis.srem(SALES_KEY, keys.product_id)


# --- the servers ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _server(
    argv: list[str], settings: Settings, probe: tuple[str, str], log: Path
) -> AsyncIterator[str]:
    """Runs one target on a free port until the block ends; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    env.update(settings.replace(queue_port=port).to_env())
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, cwd=REPO, env=env, stdout=out, stderr=out
        )
    base_url = f"http://{settings.host}:{port}"
    try:
        await _wait_ready(base_url, probe, proc, log)
        yield base_url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _wait_ready(
    base_url: str, probe: tuple[str, str], proc: asyncio.subprocess.Process, log: Path
) -> None:
    method, path = probe
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0, trust_env=False) as client:
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"{base_url} exited ({proc.returncode}); see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.request(method, path)).status_code < 300:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{base_url}{path} never answered; see {log}")
            await asyncio.sleep(0.1)


async def _measure(
    label: str, base_url: str, load: Load, args: argparse.Namespace, use_wrk: bool
) -> Measurement:
    # A short warm-up first: connection pools, loaded scripts and caches, as in steady state.
    await measure(base_url, load, WARMUP_S, args.connections, args.threads, use_wrk)
    result = await measure(base_url, load, args.duration, args.connections, args.threads, use_wrk)
    flag = "" if result.non_2xx == result.socket_errors == 0 else "  (!) errors, see below"
    print(
        f"  {label:<14} {result.rps:>9,.0f} req/s   p50 {result.p50_ms:6.2f} ms   "
        f"p99 {result.p99_ms:6.2f} ms{flag}",
        flush=True,
    )
    if flag:
        print(f"    non-2xx {result.non_2xx}, socket errors {result.socket_errors}")
    return result


# --- the run -------------------------------------------------------------------------------


async def run(args: argparse.Namespace, redis_url: str, logs: Path) -> dict[str, Any]:
    machine = suite_machine()  # before the bench loads the machine itself
    use_wrk = args.tool == "wrk" or (args.tool == "auto" and wrk_path() is not None)
    if args.tool == "wrk" and wrk_path() is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    if use_wrk:
        tool = f"wrk -c{args.connections} -t{args.threads} -d{args.duration:g}s"
    else:
        tool = f"httpx fallback, {args.connections} concurrent requests, {args.duration:g}s"
        print(
            "wrk not found: using the asyncio httpx load generator. It is pure Python and "
            "shares the CPU with the server, so it is often the bottleneck itself: its numbers "
            "understate every target and squeeze the ratios towards 1. Install wrk "
            "(apt-get install -y wrk) for numbers comparable with ANCHORS.md.",
            flush=True,
        )
    settings = Settings.from_env({}, dev=True, redis_url=redis_url, join_rate_per_ip=0).replace(
        log_level="warning"
    )
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        print(f"Filling a line of {args.line:,} visitors...", flush=True)
        keys = await _prepare_sale(redis, args.line)
        try:
            tickets = await _tickets(redis, keys, TokenCodec(settings.secret_keys), args.tickets)
            print(f"Load: {tool}", flush=True)
            results: dict[str, Measurement] = {}
            argv = {
                "bare": ["-m", "bench.baselines", "bare"],
                "naive": ["-m", "bench.baselines", "naive"],
            }
            async with _server(argv["bare"], settings, ("GET", "/"), logs / "bare.log") as url:
                results["bare"] = await _measure("bare", url, Load("GET", "/"), args, use_wrk)
            naive_probe = ("POST", "/join")
            async with _server(argv["naive"], settings, naive_probe, logs / "naive.log") as url:
                results["naive"] = await _measure(
                    "naive", url, Load("POST", "/join"), args, use_wrk
                )
            ours = ["-m", "queue_server"]
            async with _server(ours, settings, ("GET", "/healthz"), logs / "ours.log") as url:
                base = f"/queue/{keys.product_id}"
                results["join"] = await _measure(
                    "ours join", url, Load("POST", f"{base}/join"), args, use_wrk
                )
                results["status"] = await _measure(
                    "ours status", url, Load("GET", f"{base}/status", tuple(tickets)), args, use_wrk
                )
            line_after = await redis.zcard(keys.line)
        finally:
            await _cleanup(redis, keys)
    finally:
        await redis.aclose()

    bare, naive = results["bare"].rps, results["naive"].rps
    ratios = {
        "join_over_bare": results["join"].rps / bare,
        "status_over_bare": results["status"].rps / bare,
        "join_over_naive": results["join"].rps / naive,
        "status_over_naive": results["status"].rps / naive,
        "naive_over_bare": naive / bare,
    }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "load": tool,
        "line_before": args.line,
        "line_after": line_after,
        "status_tickets": len(tickets),
        "results": {name: m.as_dict() for name, m in results.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "anchors_rps": ANCHOR_RPS,
        "anchors_naive_over_bare": round(ANCHOR_RPS["naive"] / ANCHOR_RPS["bare"], 3),
    }


def _print_ratios(report: dict[str, Any]) -> None:
    r = report["ratios"]
    print("\nRatios (same machine, same run):")
    print(
        f"  join   / bare  {r['join_over_bare']:6.3f}    join   / naive {r['join_over_naive']:6.3f}"
    )
    print(
        f"  status / bare  {r['status_over_bare']:6.3f}    status / naive "
        f"{r['status_over_naive']:6.3f}"
    )
    print(
        f"  naive  / bare  {r['naive_over_bare']:6.3f}    "
        f"(ANCHORS.md: {report['anchors_naive_over_bare']:.3f})"
    )


async def main_async(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse_args(argv)
    # The servers' logs stay next to the results (git-ignored), for when a target misbehaves.
    logs = args.output.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flashsale-bench-") as tmp:
        if url := os.environ.get("FLASHSALE_REDIS_URL"):
            report = await run(args, url, logs)
        else:
            async with EmbeddedStack(Path(tmp) / "stack", database=False, kafka=False) as stack:
                report = await run(args, stack.redis_url, logs)
    _print_ratios(report)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    labels = {
        "bare": "bare Starlette",
        "naive": "naive ZADD+ZRANK",
        "join": "ours: join",
        "status": "ours: status",
    }
    plot = bar_chart(
        args.output.with_suffix(".svg"),
        f"Queue server vs baselines ({report['load']}, line of {report['line_before']:,})",
        [(labels.get(name, name), r["rps"]) for name, r in report["results"].items()],
        "req/s",
    )
    print(f"\nWrote {args.output} and {plot}")
    if report["machine"]["load_avg_start"][0] > 0.5:
        print(
            f"Note: the 1-minute load average was {report['machine']['load_avg_start'][0]} at "
            "the start; other work on this machine lowers every number."
        )
    return report


def main(argv: list[str] | None = None) -> None:
    asyncio.run(main_async(argv))


if __name__ == "__main__":
    main()
