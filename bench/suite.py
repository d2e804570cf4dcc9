"""`flashsale bench`: every figure of issue 7's Targets table, measured in one run.

    python -m bench [--quick] [--out FILE]        # what `flashsale bench` runs

The run starts the embedded Valkey, PostgreSQL and tansu once, then measures in groups, one
after another so that no two groups compete for the CPU:

- ``queue``: bare hello, join, status (1,000 and a big line), Valkey bytes per visitor, and
  the Redis calls per join, status and admitted visitor;
- ``gate``: a product read through the gate against the shop read directly;
- ``orders``: the shop's order intake (through the gate), then the order worker's drain;
- ``sellout``: ``flashsale up`` itself, and visitors who buy at once when admitted;
- ``storm``: the same platform, and visitors who wait minutes, obeying ``poll_after_ms``.

Every throughput ratio uses one generator for both sides (wrk ``-t1 -c64`` when installed,
else the httpx fallback of :mod:`bench.loadgen`), a separate process, against servers that
each run one uvicorn worker. See bench/README.md for how each figure is taken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench import procs, sales
from bench.loadgen import Load, Measurement, measure, wrk_path
from bench.redisprobe import ClientCommands, preload_scripts, probe_client, used_memory
from bench.targets import KEYS, TARGETS
from bench.visitors import Storm, Visitor
from infra.constants import (
    HEADER_GATE_SECRET,
    HEADER_PRODUCT_ID,
    HEADER_TOKEN_ID,
    HEADER_VISITOR_ID,
)
from infra.sale.keys import SaleKeys
from infra.settings import Settings
from infra.stack.embedded import EmbeddedStack
from token_gate.codec import TokenCodec, new_token_id, new_visitor_id

RESULTS = Path(__file__).resolve().parent / "results"
GROUPS = ("queue", "gate", "orders", "sellout", "storm")
CONNECTIONS = 64  # wrk -c64, as in the issue and ANCHORS.md
THREADS = 1  # wrk -t1: on two cores, a second wrk thread takes CPU from the server
TOKEN_TTL_S = 600
SMALL_LINE = 1_000


@dataclass(frozen=True)
class Sizes:
    duration_s: float  # per throughput measurement, after a warm-up
    warmup_s: float
    big_line: int  # the "1,000,000 waiting" line (and the memory figure's visitors)
    calls_ops: int  # joins and statuses counted for the Redis calls figures
    admitted: int  # visitors admitted for the calls-per-admitted figure
    admit_batch: int
    storm_visitors: int  # the polls/notice storm: its wait is visitors / rate
    storm_batch: int
    storm_interval_s: float
    sellout_stock: int  # visitors = 2 × stock, all buying at once when admitted
    sellout_batch: int
    sellout_interval_s: float
    order_tokens: int  # distinct visitors available to the order intake run
    rounds: int = 2  # of each throughput measurement, interleaved; the best one counts


FULL = Sizes(10, 2, 1_000_000, 300, 2_000, 100, 3_000, 10, 1.0, 1_000, 50, 1.0, 120_000)
# A run of under five minutes on two cores: a 100k line, a 30 s wait, 200 in stock.
QUICK = Sizes(5, 1, 100_000, 100, 500, 100, 600, 10, 0.5, 200, 20, 1.0, 60_000)
# For the tests: every code path, tiny sizes; its numbers mean nothing.
TINY = Sizes(1, 1, 2_000, 10, 40, 20, 30, 10, 0.5, 10, 10, 0.5, 5_000, rounds=1)


# --- the run's context ---------------------------------------------------------------------


@dataclass
class Run:
    sizes: Sizes
    settings: Settings
    redis: Redis
    probe: Redis
    logs: Path
    use_wrk: bool
    figures: dict[str, float | None]
    details: dict[str, Any]

    @property
    def codec(self) -> TokenCodec:
        return TokenCodec(self.settings.secret_keys)

    async def load(self, label: str, base_url: str, load: Load) -> Measurement:
        """A warm-up, then the measurement, with one generator for every target."""
        s = self.sizes
        await measure(base_url, load, s.warmup_s, CONNECTIONS, THREADS, self.use_wrk)
        result = await measure(base_url, load, s.duration_s, CONNECTIONS, THREADS, self.use_wrk)
        self.details.setdefault("throughput", {}).setdefault(label, []).append(result.as_dict())
        bad = "" if result.non_2xx == result.socket_errors == 0 else "  (!) errors"
        say(
            f"  {label:<24} {result.rps:>9,.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms{bad}"
        )
        return result

    async def rounds(self, targets: dict[str, tuple[str, Load]]) -> dict[str, Best]:
        """Each target in turn, ``sizes.rounds`` times over, so that both sides of every
        ratio see the same moments of the machine; each keeps its best round (highest
        req/s, lowest p99): others' work on a shared machine only ever makes numbers worse."""
        seen: dict[str, list[Measurement]] = {label: [] for label in targets}
        for _ in range(self.sizes.rounds):
            for label, (url, load) in targets.items():
                seen[label].append(await self.load(label, url, load))
        return {
            label: Best(max(m.rps for m in runs), min(m.p99_ms for m in runs))
            for label, runs in seen.items()
        }


@dataclass(frozen=True)
class Best:
    rps: float
    p99_ms: float


def say(text: str) -> None:
    print(text, flush=True)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


# --- group: queue --------------------------------------------------------------------------


async def queue_group(run: Run) -> None:
    s, redis, codec = run.sizes, run.redis, run.codec
    say("queue: bare hello, join, status, memory, Redis calls")
    small, small_visitors = await sales.waiting_sale(redis, "bench-small", SMALL_LINE)
    # Joins go to a sale of their own, so the 1,000-visitor line stays 1,000 long.
    join_sale, _ = await sales.waiting_sale(redis, "bench-join", SMALL_LINE, keep=1)
    say(f"  filling a line of {s.big_line:,} through join.lua ...")
    await asyncio.sleep(1)  # let Valkey's cron settle client buffers before the reading
    before = await used_memory(run.probe)
    started = time.monotonic()
    big, big_visitors = await sales.waiting_sale(redis, "bench-big", s.big_line)
    fill_s = time.monotonic() - started
    await asyncio.sleep(1)
    grown = await used_memory(run.probe) - before
    run.figures["redis_bytes_per_visitor"] = round(grown / s.big_line, 1)
    run.details["memory"] = {
        "visitors": s.big_line,
        "used_memory_delta": grown,
        "fill_s": round(fill_s, 1),
    }
    say(f"  memory: {grown:,} B for {s.big_line:,} visitors (filled in {fill_s:.1f} s)")

    bare = procs.service(
        "bench.baselines", run.settings, run.logs, port_field="queue_port", args=("bare",),
        probe="/", name="bare",
    )  # fmt: skip
    queue = procs.service("queue_server", run.settings, run.logs, port_field="queue_port")
    async with bare as hello_server, queue as q:
        big_label = f"status, {s.big_line:,} waiting"
        big_tickets = tuple(sales.tickets(codec, big, big_visitors))
        best = await run.rounds(
            {
                "bare hello": (hello_server.url, Load("GET", "/")),
                # The hello sent exactly the status requests (their tickets, rotated by wrk's
                # Lua): rotating costs wrk CPU that the two cores share with the server, so
                # this is the hello a status measurement competes with (details only).
                "bare hello, status requests": (hello_server.url, Load("GET", "/", big_tickets)),
                "status, 1k waiting": (
                    q.url,
                    Load(
                        "GET",
                        f"/queue/{small.product_id}/status",
                        tuple(sales.tickets(codec, small, small_visitors)),
                    ),
                ),
                big_label: (q.url, Load("GET", f"/queue/{big.product_id}/status", big_tickets)),
                "join": (q.url, Load("POST", f"/queue/{join_sale.product_id}/join")),
            }
        )
        hello = best["bare hello"]
        run.figures["join_vs_hello"] = _ratio(best["join"].rps, hello.rps)
        run.figures["status_vs_hello"] = _ratio(best[big_label].rps, hello.rps)
        same = _ratio(best[big_label].rps, best["bare hello, status requests"].rps)
        run.details["status_vs_hello_same_requests"] = same
        say(f"  status ÷ the hello sent the same requests: {same}")
        run.figures["status_p99_1m_vs_1k"] = _ratio(
            best[big_label].p99_ms, best["status, 1k waiting"].p99_ms
        )
        await _calls_per_join_and_status(run, q.url, small, small_visitors)
        for keys in (small, big, join_sale):
            await sales.drop_sale(redis, keys)
        await _calls_per_admitted(run, q.url)


async def _calls_per_join_and_status(
    run: Run, queue_url: str, keys: SaleKeys, visitors: list[str]
) -> None:
    n, codec = run.sizes.calls_ops, run.codec
    base = f"{queue_url}/queue/{keys.product_id}"
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        await client.get(f"{queue_url}/healthz")  # the connection is open before counting
        async with ClientCommands(run.settings.redis_url, run.probe) as joins:
            for _ in range(n):
                (await client.post(f"{base}/join")).raise_for_status()
        tickets = sales.tickets(codec, keys, visitors[:n])
        async with ClientCommands(run.settings.redis_url, run.probe) as statuses:
            for ticket in tickets:
                headers = {"Authorization": f"Bearer {ticket}"}
                (await client.get(f"{base}/status", headers=headers)).raise_for_status()
    run.figures["redis_calls_per_join"] = round(joins.total / n, 3)
    run.figures["redis_calls_per_status"] = round(statuses.total / len(tickets), 3)
    for label, seen, ops in (("join", joins, n), ("status", statuses, len(tickets))):
        run.details.setdefault("redis_calls", {})[label] = _calls_detail(seen, ops)
        say(f"  Redis calls per {label}: {seen.total / ops:.3f}  {dict(seen.counts)}")


def _calls_detail(seen: ClientCommands, ops: int) -> dict[str, Any]:
    return {
        "operations": ops,
        "client_commands": dict(seen.counts),
        "connection_handshakes": dict(seen.handshake),
        "script_inner_commands": seen.inner,
        "commandstats_delta": dict(seen.stats),
    }


async def _calls_per_admitted(run: Run, queue_url: str) -> None:
    """Everything Valkey is asked while the real scheduler admits a line and each admitted
    visitor picks its turn up with one status call, divided by the visitors admitted."""
    s, redis, codec = run.sizes, run.redis, run.codec
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(
        procs.service("scheduler", run.settings, run.logs, port_field="scheduler_port")
    )
    try:
        lead_s = 2.0
        keys = await sales.new_sale(
            redis,
            "bench-admit",
            sale_start=sales.iso_in(lead_s),
            batch_size=s.admit_batch,
            interval_s=0.5,
        )
        visitors = await sales.fill_line(redis, keys, s.admitted, keep=s.admitted)
        async with ClientCommands(run.settings.redis_url, run.probe) as seen:
            deadline = time.monotonic() + lead_s + s.admitted / s.admit_batch + 30
            while await run.probe.hlen(keys.tokens) < len(visitors):
                if time.monotonic() > deadline:
                    raise RuntimeError("the scheduler did not admit the whole line in time")
                await asyncio.sleep(0.1)
            await stack.aclose()  # the scheduler stops: what it cost is all in the window
            picked = 0
            async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
                for ticket in sales.tickets(codec, keys, visitors):
                    response = await client.get(
                        f"{queue_url}/queue/{keys.product_id}/status",
                        headers={"Authorization": f"Bearer {ticket}"},
                    )
                    picked += response.json().get("state") == "admitted"
        await sales.drop_sale(redis, keys)
    finally:
        await stack.aclose()
    if picked != len(visitors):
        say(f"  (!) only {picked} of {len(visitors)} admitted visitors saw `admitted`")
    run.figures["redis_calls_per_admitted"] = round(seen.total / len(visitors), 3)
    run.details.setdefault("redis_calls", {})["admitted"] = _calls_detail(seen, len(visitors))
    per = seen.total / len(visitors)
    say(f"  Redis calls per admitted visitor: {per:.3f}  {dict(seen.counts)}")


# --- group: gate and orders ----------------------------------------------------------------


async def migrate(run: Run) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shop.migrate", env=procs.child_env(run.settings), cwd=procs.REPO
    )
    if await proc.wait() != 0:
        raise RuntimeError("shop.migrate failed")


@contextlib.asynccontextmanager
async def shop_and_gate(run: Run) -> AsyncIterator[tuple[procs.Child, procs.Child]]:
    async with procs.service("shop", run.settings, run.logs, port_field="shop_port") as shop:
        port = int(shop.url.rsplit(":", 1)[1])
        gated = run.settings.replace(shop_port=port)
        async with procs.service("token_gate", gated, run.logs, port_field="gate_port") as gate:
            yield shop, gate


async def gate_group(run: Run) -> None:
    say("gate: GET /products/{id} through the gate and directly")
    keys = await sales.new_sale(run.redis, "bench-gate")
    path = f"/products/{keys.product_id}"
    # Direct calls carry the header by which the shop knows the gate (Settings.gate_secrets).
    secret = ((HEADER_GATE_SECRET, run.settings.gate_secrets()[0]),)
    async with shop_and_gate(run) as (shop, gate):
        best = await run.rounds(
            {
                "shop GET, direct": (shop.url, Load("GET", path, headers=secret)),
                "shop GET, via gate": (gate.url, Load("GET", path)),
            }
        )
    run.figures["gate_vs_direct"] = _ratio(
        best["shop GET, via gate"].rps, best["shop GET, direct"].rps
    )
    await sales.drop_sale(run.redis, keys)


async def orders_group(run: Run) -> None:
    """Intake: wrk places orders at the shop (each as another visitor, as the per-visitor
    limit requires, with the headers the gate sets after checking a token) while no worker
    runs, so the orders wait in Kafka. Drain: the order worker then starts and stores them;
    its rate comes from PostgreSQL's stored_at. The gate stays out of it: the figure is about
    the worker keeping up with what the shop accepts, not about the proxy in front."""
    say("orders: the shop's intake, then the worker's drain")
    s = run.sizes
    keys = await sales.new_sale(run.redis, "bench-orders", stock=10_000_000)
    secret = run.settings.gate_secrets()[0]

    def visitors(n: int) -> tuple[tuple[tuple[str, str], ...], ...]:
        return tuple(
            (
                (HEADER_VISITOR_ID, new_visitor_id()),
                (HEADER_PRODUCT_ID, keys.product_id),
                (HEADER_TOKEN_ID, new_token_id()),
                (HEADER_GATE_SECRET, secret),
            )
            for _ in range(n)
        )

    path = f"/products/{keys.product_id}/orders"
    body = '{"quantity": 1}'
    async with procs.service("shop", run.settings, run.logs, port_field="shop_port") as shop:
        # Warm-up and measurement use distinct visitors: a visitor may order once.
        warm = Load("POST", path, body=body, variants=visitors(max(200, s.order_tokens // 10)))
        await measure(shop.url, warm, s.warmup_s, CONNECTIONS, THREADS, run.use_wrk)
        main = Load("POST", path, body=body, variants=visitors(s.order_tokens))
        intake = await measure(shop.url, main, s.duration_s, CONNECTIONS, THREADS, run.use_wrk)
        accepted = intake.requests - intake.non_2xx
        intake_rate = accepted / intake.seconds
        say(f"  intake: {intake_rate:,.0f} orders/s ({accepted:,} accepted, {intake.non_2xx} not)")
        if intake.non_2xx:
            say("  (!) some orders were refused: more visitors (order_tokens) are needed")
        # The reconciler republishes reservations PostgreSQL lacks after its grace period;
        # a backlog held back on purpose is not lost, so it must not be published twice.
        worker_settings = run.settings.replace(reconcile_grace_s=3600.0)
        began = time.monotonic()
        async with procs.service("shop.worker", worker_settings, run.logs):
            stored, span, last_batch, done_at = await _drained(
                run.settings.database_url, keys.product_id
            )
    if span > 0:
        drain_rate = (stored - last_batch) / span
    else:
        # One batch held them all: only the wall clock from the worker's start is left,
        # which also counts its start-up and the consumer group's join (an underestimate).
        span = done_at - began
        drain_rate = stored / span
    say(f"  drain: {drain_rate:,.0f} orders/s ({stored:,} stored over {span:.2f} s)")
    run.figures["drain_vs_intake"] = _ratio(drain_rate, intake_rate)
    run.details["orders"] = {
        "intake": intake.as_dict(),
        "intake_orders_per_s": round(intake_rate, 1),
        "stored": stored,
        "stored_span_s": round(span, 3),
        "drain_orders_per_s": round(drain_rate, 1),
    }
    await sales.drop_sale(run.redis, keys)


async def _drained(database_url: str, product_id: str) -> tuple[int, float, int, float]:
    """Waits until the worker has stored every order (the count stops moving); returns the
    rows, the seconds between the first and the last batch's transaction, the rows of the
    last batch (now() is per transaction, so the rate counts the rows stored before the last
    batch began), and when (monotonic) the count reached its final value."""
    engine = create_async_engine(database_url)
    query = text(
        "SELECT count(*), extract(epoch FROM max(stored_at) - min(stored_at)), "
        "count(*) FILTER (WHERE stored_at = (SELECT max(stored_at) FROM orders "
        "WHERE product_id = :p)) FROM orders WHERE product_id = :p"
    )
    try:
        last, steady_since = -1, time.monotonic()
        deadline = time.monotonic() + 300
        while True:
            async with engine.connect() as conn:
                count, span, last_batch = (await conn.execute(query, {"p": product_id})).one()
            if count != last:
                last, steady_since = count, time.monotonic()
            elif count > 0 and time.monotonic() - steady_since > 3:
                return int(count), float(span or 0), int(last_batch), steady_since
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker stored only {count} orders in time")
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


# --- groups: sellout and storm, on `flashsale up` ------------------------------------------


async def sellout_group(run: Run, up: procs.Platform) -> None:
    s = run.sizes
    rate = s.sellout_batch / s.sellout_interval_s
    ideal = s.sellout_stock / rate
    visitors = 2 * s.sellout_stock
    say(f"sellout: {visitors:,} visitors buy {s.sellout_stock:,} at {rate:g}/s (ideal {ideal:g} s)")
    lead = 3 + visitors / 200  # the joins land in the pre-queue, before the start
    start = time.time() + lead
    keys = await sales.new_sale(
        run.redis,
        "bench-sellout",
        stock=s.sellout_stock,
        sale_start=datetime.fromtimestamp(start, tz=UTC).isoformat(),
        queue_mode="shuffle_prequeue",
        batch_size=s.sellout_batch,
        interval_s=s.sellout_interval_s,
        token_ttl_s=TOKEN_TTL_S,
    )
    storm = Storm(up.queue, up.gate, keys.product_id, run.codec, buy=True)
    try:
        crowd = await storm.run(visitors, deadline_s=lead + 10 * ideal + 60)
    finally:
        await storm.aclose()
    orders = sorted(v.ordered_at for v in crowd if v.ordered_at is not None)
    # What Valkey holds, next to what the visitors were told: the two must agree.
    stock_left = int(await run.redis.get(keys.stock) or 0)
    reservations = await run.redis.hlen(keys.orders)
    if len(orders) > s.sellout_stock or reservations != len(orders):
        say(
            f"  (!) {len(orders)} orders accepted, {reservations} reservations stored, "
            f"stock {s.sellout_stock}, {stock_left} left: the sale is not whole"
        )
    sold_out = len(orders) >= s.sellout_stock
    took = (orders[-1] if sold_out else time.time()) - start
    run.figures["sellout_vs_ideal"] = round(took / ideal, 3)
    run.details["sellout"] = {
        "visitors": visitors,
        "stock": s.sellout_stock,
        "admission_rate_per_s": rate,
        "ideal_s": ideal,
        "sold": len(orders),
        "reservations_stored": reservations,
        "stock_left": stock_left,
        "sold_out": sold_out,
        "seconds_to_sell_out": round(took, 2),
        "outcomes": _outcomes(crowd),
    }
    flag = "" if sold_out else f"  (!) only {len(orders)} sold"
    say(f"  sold {len(orders):,} in {took:.1f} s (ideal {ideal:g} s){flag}")
    await sales.drop_sale(run.redis, keys)


async def storm_group(run: Run, up: procs.Platform) -> None:
    s = run.sizes
    rate = s.storm_batch / s.storm_interval_s
    wait = s.storm_visitors / rate
    say(f"storm: {s.storm_visitors:,} visitors, admitted at {rate:g}/s: a {wait:g} s wait")
    lead = 3 + s.storm_visitors / 200
    start = time.time() + lead
    keys = await sales.new_sale(
        run.redis,
        "bench-storm",
        stock=s.storm_visitors,  # nobody buys: the stock only has to cover every admission
        sale_start=datetime.fromtimestamp(start, tz=UTC).isoformat(),
        queue_mode="shuffle_prequeue",
        batch_size=s.storm_batch,
        interval_s=s.storm_interval_s,
        token_ttl_s=TOKEN_TTL_S,
    )
    storm = Storm(up.queue, up.gate, keys.product_id, run.codec, buy=False)
    try:
        crowd = await storm.run(s.storm_visitors, deadline_s=lead + 2 * wait + 60)
    finally:
        await storm.aclose()
    if storm.max_lateness_s > 0.5:
        say(f"  (!) the visitors woke up to {storm.max_lateness_s:.2f} s late: the bench lagged")
    admitted = [v for v in crowd if v.seen_admitted_at is not None]
    # When each was admitted: its token's expiry, which the tick set to now + token_ttl.
    async with run.redis.pipeline(transaction=False) as pipe:
        for v in admitted:
            pipe.zscore(keys.admitted, v.visitor_id)
        expiries = await pipe.execute()
    latencies = sorted(
        v.seen_admitted_at - (expiry / 1000 - TOKEN_TTL_S)
        for v, expiry in zip(admitted, expiries, strict=True)
        if v.seen_admitted_at is not None and expiry is not None
    )
    polls = sum(v.polls for v in crowd)
    run.figures["polls_per_admitted"] = round(polls / len(admitted), 2) if admitted else None
    p95 = _percentile(latencies, 0.95)
    run.figures["notice_latency_p95_s"] = round(p95, 3) if latencies else None
    run.details["storm"] = {
        "visitors": s.storm_visitors,
        "admission_rate_per_s": rate,
        "expected_wait_s": wait,
        "admitted": len(admitted),
        "polls": polls,
        "generator_max_lateness_s": round(storm.max_lateness_s, 3),
        "notice_latency_s": {
            "p50": round(_percentile(latencies, 0.5), 3) if latencies else None,
            "p95": round(p95, 3) if latencies else None,
            "max": round(latencies[-1], 3) if latencies else None,
        },
        "outcomes": _outcomes(crowd),
    }
    say(
        f"  {len(admitted):,} admitted, {polls:,} polls; notice latency p95 "
        f"{p95:.2f} s, p50 {_percentile(latencies, 0.5):.2f} s"
    )
    await sales.drop_sale(run.redis, keys)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]


def _outcomes(crowd: list[Visitor]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in crowd:
        counts[v.outcome] = counts.get(v.outcome, 0) + 1
    return counts


# --- the run -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def git_commit() -> str:
    """The commit measured, with "+dirty" when tracked files differ from it (others may be
    editing the same checkout while the bench runs)."""
    git = ["git", "-C", str(procs.REPO)]
    try:
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        )
    except OSError:
        return ""
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


async def run_bench(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    info = machine()  # before the bench loads the machine itself
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    use_wrk = args.tool == "wrk" or (args.tool == "auto" and wrk_path() is not None)
    if args.tool == "wrk" and not use_wrk:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    if not use_wrk:
        say(
            "wrk not found: using the asyncio httpx generator, which is slower than the "
            "servers it measures; its ratios are squeezed towards 1 (apt-get install -y wrk)."
        )
    groups = args.only or GROUPS
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    figures: dict[str, float | None] = dict.fromkeys(KEYS)
    details: dict[str, Any] = {
        "sizes": asdict(sizes),
        "generator": f"wrk -t{THREADS} -c{CONNECTIONS}" if use_wrk else "httpx",
        "commit": git_commit(),
    }
    with tempfile.TemporaryDirectory(prefix="flashsale-bench-") as tmp:
        needs_sql = bool({"gate", "orders", "sellout", "storm"} & set(groups))
        async with EmbeddedStack(Path(tmp), database=needs_sql, kafka=needs_sql) as stack:
            settings = Settings.from_env(
                {},
                dev=True,
                redis_url=stack.redis_url,
                database_url=stack.database_url if needs_sql else None,
                kafka_bootstrap=stack.kafka_bootstrap if needs_sql else None,
                join_rate_per_ip=0,  # every simulated visitor comes from one address
            ).replace(log_level="warning")
            redis = Redis.from_url(settings.redis_url, decode_responses=True)
            probe = await probe_client(settings.redis_url)
            await preload_scripts(probe)
            run = Run(sizes, settings, redis, probe, logs, use_wrk, figures, details)
            try:
                steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
                if "queue" in groups:
                    steps.append(("queue", lambda: queue_group(run)))
                if needs_sql:
                    steps.append(("migrate", lambda: migrate(run)))
                if "gate" in groups:
                    steps.append(("gate", lambda: gate_group(run)))
                if "orders" in groups:
                    steps.append(("orders", lambda: orders_group(run)))
                for _, step in steps:
                    await step()
                if {"sellout", "storm"} & set(groups):
                    say("starting `flashsale up` ...")
                    async with procs.platform(settings, logs) as up:
                        if "sellout" in groups:
                            await sellout_group(run, up)
                        if "storm" in groups:
                            await storm_group(run, up)
            finally:
                await redis.aclose()
                await probe.aclose()
    info["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return {**figures, "machine": info}, details


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flashsale bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: under 5 minutes")
    parser.add_argument("--out", type=Path, help="write the figures as JSON to this file")
    parser.add_argument("--tool", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument(
        "--only",
        type=lambda v: tuple(g for g in v.split(",") if g),
        help=f"comma-separated groups to run ({','.join(GROUPS)}); the others stay null",
    )
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # for tests
    args = parser.parse_args(argv)
    unknown = set(args.only or ()) - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    from bench.report import chart, print_table  # matplotlib only when a run ends

    args = _parse_args(argv)
    started = time.monotonic()
    result, details = asyncio.run(run_bench(args))
    details["seconds"] = round(time.monotonic() - started, 1)
    print_table(result, details)
    text_out = json.dumps(result, indent=2) + "\n"
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text_out)
        say(f"wrote {args.out}")
    if not (args.quick or args.tiny or args.only):
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%MZ")
        path = RESULTS / f"{stamp}.json"
        path.write_text(text_out)
        (RESULTS / f"{stamp}.details.json").write_text(json.dumps(details, indent=2) + "\n")
        png = chart(result, RESULTS / f"{stamp}.png", details)
        say(f"wrote {path}, {png} and the details next to them")
    else:
        (RESULTS / "last-details.json").write_text(json.dumps(details, indent=2) + "\n")
    verdicts = [t.passes(result[t.key]) for t in TARGETS]
    measured = sum(v is not None for v in verdicts)
    say(f"{verdicts.count(True)} of {measured} measured targets met in {details['seconds']} s")
    # Not an error: the bench measures; missing a target is a finding, not a failure.
    return 0
