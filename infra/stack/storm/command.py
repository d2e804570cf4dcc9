"""`flashsale storm`: a Locust storm against a real platform, judged by its invariants."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.stack.storm.invariants import (
    Check,
    check_finished,
    check_generator,
    check_sale,
    outcome_counts,
)
from infra.stack.storm.options import Options, UsageError, file_warnings, options
from infra.stack.storm.platform import (
    Admin,
    Platform,
    PlatformError,
    flashsale_up,
    sale_body,
)
from infra.stack.storm.report import figures, write_report
from infra.stack.storm.rss import RssSample, growth, sample_every, sample_tree
from infra.stack.storm.swarm import SwarmPlan, read_failures, read_stats, swarm

SAMPLE_S = 1.0
RATE_WINDOW = 8  # samples
# The file descriptors a storm needs: one connection per visitor tab in a Locust worker and
# as many again in the queue server, which inherits our limit through `flashsale up`.
WANTED_FILES = 262_144


def run(args: argparse.Namespace) -> int:
    files = raise_file_limit()  # first: the workers' count depends on it
    try:
        opts = options(args, files)
    except UsageError as exc:
        print(f"flashsale storm: {exc}", file=sys.stderr, flush=True)
        return 2
    for line in file_warnings(opts):
        print(f"flashsale storm: warning: {line}", file=sys.stderr, flush=True)
    try:
        return asyncio.run(_until_signalled(opts))
    except PlatformError as exc:
        print(f"flashsale storm: {exc}", file=sys.stderr, flush=True)
        return 1
    except httpx.HTTPError as exc:  # the admin API stopped answering mid-storm
        print(f"flashsale storm: admin API: {exc!r}", file=sys.stderr, flush=True)
        return 1


async def _until_signalled(opts: Options) -> int:
    """The storm, stopped cleanly on SIGTERM or SIGINT: the Locust processes and the
    platform are children of ours, and a storm killed outright would leave them running."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await storm(opts)
    except asyncio.CancelledError:
        print("flashsale storm: stopped by a signal", file=sys.stderr, flush=True)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def raise_file_limit() -> int:
    """Raise our open-file limit (the platform and Locust inherit it); returns the result."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((WANTED_FILES, max(hard, WANTED_FILES)), (hard, hard)):
        with contextlib.suppress(ValueError, OSError):
            if limits[0] > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)
                break
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def products(opts: Options) -> list[str]:
    main = f"storm-{opts.stamp}"
    return [main, f"{main}-b"] if opts.shares["two_sales"] > 0 else [main]


async def storm(opts: Options) -> int:
    out = opts.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    console = Console()
    names = products(opts)
    async with contextlib.AsyncExitStack() as stack:
        if opts.urls is not None:
            platform = Platform(
                queue_urls=opts.urls["queue"],
                gate_urls=opts.urls["gate"],
                shop_url=opts.urls["shop"][0],
                admin_key=opts.admin_key,
            )
        else:
            data_dir = opts.data_dir
            if data_dir is None:
                data_dir = Path(tempfile.mkdtemp(prefix="flashsale-storm-"))
                # Registered first, so it runs last: after the platform has stopped.
                stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
            console.print(
                f"starting flashsale up --replicas {opts.replicas} (data in {data_dir}) ..."
            )
            platform = await stack.enter_async_context(
                flashsale_up(
                    data_dir.resolve(), out / "platform.log", opts.admin_key, opts.replicas
                )
            )
            console.print(
                f"platform ready: queue {', '.join(platform.queue_urls)}; "
                f"gate {', '.join(platform.gate_urls)}"
            )
        admin = Admin(platform)
        stack.push_async_callback(admin.aclose)
        for product in names:
            await admin.create_sale(
                sale_body(
                    product,
                    stock=opts.stock,
                    mode=opts.mode,
                    opens_in_s=opts.opens_in_s,
                    batch_size=opts.batch_size,
                    interval_s=opts.interval_s,
                    abandon_s=opts.abandon_s,
                    pickup_s=opts.pickup_s,
                    overbook=opts.overbook,
                )
            )
        records = out / "records"
        env = {
            "FLASHSALE_PRODUCT": names[0],
            "FLASHSALE_PRODUCT_B": names[1] if len(names) > 1 else "",
            # Visitor k of Locust worker w uses replica (w + k) mod N of each list, for good.
            "FLASHSALE_QUEUE_URLS": ",".join(platform.queue_urls),
            "FLASHSALE_GATE_URL": ",".join(platform.gate_urls),
            "FLASHSALE_QUIT_WHEN_DONE": "1",
            "FLASHSALE_RECORDS": str(records),
            "FLASHSALE_ABANDON_SHARE": str(opts.shares["abandon"]),
            "FLASHSALE_REFRESH_SHARE": str(opts.shares["refresh"]),
            "FLASHSALE_TWO_SALES_SHARE": str(opts.shares["two_sales"]),
        }
        plan = SwarmPlan(
            locustfile=opts.locustfile,
            host=platform.queue_url,
            users=opts.visitors,
            spawn_rate=opts.spawn_rate,
            run_time_s=opts.duration_s,
            workers=opts.workers,
            out_dir=out,
            env=env,
        )
        started = time.monotonic()
        rss: list[RssSample] = []
        if platform.pid is not None:
            sampler = asyncio.create_task(
                sample_every(platform.pid, started, opts.rss_every_s, rss)
            )
            stack.push_async_callback(_cancelled, sampler)
        async with swarm(plan) as running:
            timeline = await watch(running.master, admin, names, opts, out, console, started)
        ran_s = time.monotonic() - started
        if running.master.returncode not in (0, None):
            # Locust exits 1 when any request failed; the checks below say whether it matters.
            print(f"\nlocust exited with code {running.master.returncode}; see {out}/locust-*.log")
        print("\nvisitors done; waiting for the order worker to store every order ...", flush=True)
        final = await drain(admin, names, opts.drain_timeout_s)
        infos = {p: await admin.sale_info(p) for p in names}
        if platform.pid is not None:
            # The last sample after the drain: the platform has done all the storm's work.
            rss.extend(sample_tree(platform.pid, time.monotonic() - started))
    tabs = load_tabs(records)
    numbers = read_stats(out)
    checks: list[Check] = [check_finished(opts.visitors, numbers.done), check_generator(tabs)]
    if opts.max_error_ratio is not None:
        checks.append(check_errors(numbers.requests, numbers.failures, opts.max_error_ratio))
    for p in names:
        mine = [t for t in tabs if t.get("product") == p]
        checks += check_sale(p, opts.mode, final[p], mine, infos.get(p))
    summary = summarize(opts, numbers, tabs, timeline, ran_s, names)
    report = write_report(
        out,
        title=f"Storm {opts.stamp}: {opts.visitors:,} visitors, {opts.stock:,} in stock",
        settings=settings_table(opts, platform),
        summary=summary,
        checks=checks,
        timeline=timeline,
        tabs=tabs,
        products=names,
        failures=read_failures(out),
        rss=rss,
    )
    # Plain lines, never wrapped: tests and scripts read them.
    for check in checks:
        print(check.line())
    for key, value in summary.items():
        print(f"{key}: {value}")
    for name, g in growth(rss).items():
        print(
            f"rss {name}: first {g['first_kb'] / 1024:.1f} MB, last {g['last_kb'] / 1024:.1f} MB, "
            f"last ÷ first {g['last_vs_first']:.3f}, last ÷ after 1 min "
            f"{g['last_vs_warm']:.3f} ({g['samples']} samples)"
        )
    broken = [c for c in checks if not c.ok]
    print(f"report: {report}")
    verdict = f"{len(broken)} invariant(s) broken" if broken else "all invariants hold"
    print(f"STORM {'FAILED' if broken else 'PASSED'}: {verdict}", flush=True)
    return 1 if broken else 0


async def _cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def check_errors(requests: int, failures: int, max_ratio: float) -> Check:
    """A steady storm holds its pace: at most `max_ratio` of its requests may fail."""
    ratio = failures / requests if requests else 0.0
    return Check(
        f"errors under {max_ratio:.2%}",
        requests > 0 and ratio <= max_ratio,
        f"{failures:,} of {requests:,} requests failed ({ratio:.4%})",
    )


async def watch(
    master: asyncio.subprocess.Process,
    admin: Admin,
    names: Sequence[str],
    opts: Options,
    out: Path,
    console: Console,
    started: float,
) -> list[dict[str, Any]]:
    """Sample the admin stats and Locust's CSV every second until the master exits, showing
    a progress bar of finished visitors and the live counters."""
    progress = Progress(
        TextColumn("[bold]visitors done"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    bar = progress.add_task("visitors", total=opts.visitors)
    timeline: list[dict[str, Any]] = []
    deadline = started + opts.duration_s + 60  # Locust's own -t, plus its shutdown
    # Workers report to the master every few seconds, so the request count moves in steps:
    # the rate is taken over a window of several seconds, not between two samples.
    window: deque[tuple[float, int]] = deque(maxlen=RATE_WINDOW)
    last_print = 0.0
    with Live(progress, console=console, refresh_per_second=2) as live:
        while master.returncode is None and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(master.wait(), SAMPLE_S)
            t = time.monotonic() - started
            numbers = read_stats(out)
            row: dict[str, Any] = {"t": round(t, 2), "requests": numbers.requests}
            row.update(failures=numbers.failures, done=numbers.done)
            window.append((t, numbers.requests))
            (t0, r0), (t1, r1) = window[0], window[-1]
            row["rps"] = round((r1 - r0) / (t1 - t0), 1) if t1 > t0 else 0.0
            for p in names:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    s = await admin.stats(p)
                    orders = s.get("orders") or {}
                    row.update(
                        {
                            f"{p}.waiting": s["waiting"],
                            f"{p}.admitted": s["tokens_issued"],
                            f"{p}.stock_left": s["stock_left"],
                            f"{p}.pending": orders.get("pending", 0),
                            f"{p}.stored": orders.get("placed", 0) + orders.get("paid", 0),
                        }
                    )
            timeline.append(row)
            progress.update(bar, completed=numbers.done)
            live.update(Group(progress, counters(row, names, numbers.outcomes)))
            if not console.is_terminal and t - last_print >= 15:
                # Logs and CI: a plain line now and then instead of a redrawn screen.
                last_print = t
                print(plain_line(row, names), flush=True)
    return timeline


def counters(row: Mapping[str, Any], names: Sequence[str], outcomes: Mapping[str, int]) -> Table:
    table = Table(box=None, show_header=True, pad_edge=False)
    for column in ("sale", "waiting", "admitted", "stock left", "orders pending", "stored"):
        table.add_column(column, justify="right")
    for p in names:
        table.add_row(
            p,
            *(
                f"{row.get(f'{p}.{k}', '–')}"
                for k in ("waiting", "admitted", "stock_left", "pending", "stored")
            ),
        )
    table.caption = (
        f"requests {row['requests']:,} ({row['rps']:,.0f}/s), failures {row['failures']:,}; "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items()))
    )
    return table


def plain_line(row: Mapping[str, Any], names: Sequence[str]) -> str:
    sales = " ".join(
        f"{p}: waiting {row.get(f'{p}.waiting')} admitted {row.get(f'{p}.admitted')} "
        f"left {row.get(f'{p}.stock_left')}"
        for p in names
    )
    return (
        f"t={row['t']:.0f}s done {row['done']} requests {row['requests']} "
        f"({row['rps']:.0f}/s) failures {row['failures']} | {sales}"
    )


async def drain(admin: Admin, names: Sequence[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """The sales' stats once every sold unit is stored in PostgreSQL, or at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        final = {p: await admin.stats(p) for p in names}
        if all(_drained(s) for s in final.values()) or time.monotonic() > deadline:
            return final
        await asyncio.sleep(0.5)


def _drained(stats: Mapping[str, Any]) -> bool:
    orders = stats.get("orders") or {}
    sold = int(stats["stock_total"]) - int(stats["stock_left"])
    stored = int(orders.get("placed", 0)) + int(orders.get("paid", 0))
    return int(orders.get("pending", 0)) == 0 and stored == sold


def load_tabs(records: Path) -> list[dict[str, Any]]:
    tabs = []
    for path in sorted(records.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                tabs.append(orjson.loads(line))
    return tabs


def summarize(
    opts: Options,
    numbers: Any,
    tabs: Sequence[Mapping[str, Any]],
    timeline: Sequence[Mapping[str, Any]],
    ran_s: float,
    names: Sequence[str],
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "visitors done": numbers.done,
        "storm seconds": round(ran_s, 1),
        "requests": numbers.requests,
        "requests per second": round(numbers.requests / max(ran_s, 1e-9), 1),
        "failed requests": numbers.failures,
        "failed ÷ all requests": round(numbers.failures / max(numbers.requests, 1), 6),
    }
    summary.update({k.replace("_", " "): _round(v) for k, v in figures(tabs).items()})
    rate = opts.batch_size / opts.interval_s
    # A steady storm sells as fast as visitors arrive: a sell-out time says nothing there.
    ideal = opts.stock / rate if rate and not opts.steady else None
    for p in names:
        sold_at = next(
            (float(r["t"]) for r in timeline if r.get(f"{p}.stock_left") == 0),
            None,
        )
        if sold_at is not None and ideal:
            selling = max(sold_at - opts.opens_in_s, 0.0)
            summary[f"{p} sold out after open, s"] = round(selling, 1)
            summary[f"{p} sell-out ÷ ideal ({ideal:.1f} s)"] = round(selling / ideal, 2)
    if opts.replicas > 1:
        spread = Counter(int(t.get("replica") or 0) for t in tabs)
        summary["tabs per queue replica"] = ", ".join(
            f"{i}: {spread.get(i, 0)}" for i in range(opts.replicas)
        )
    summary["outcomes"] = ", ".join(f"{k} {v}" for k, v in sorted(outcome_counts(tabs).items()))
    return summary


def _round(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


def settings_table(opts: Options, platform: Platform) -> dict[str, Any]:
    return {
        "storm": (
            f"steady: {opts.spawn_rate:g} arrivals/s for {opts.visitors / opts.spawn_rate:.0f} s"
            if opts.steady
            else f"burst: {opts.spawn_rate:g} arrivals/s"
        ),
        "visitors": opts.visitors,
        "stock (per sale)": opts.stock,
        "mode": opts.mode,
        "batch size / interval": f"{opts.batch_size} / {opts.interval_s} s",
        "spawn rate": f"{opts.spawn_rate}/s",
        "opens in": f"{opts.opens_in_s} s",
        "shares (abandon, refresh, two sales)": ", ".join(str(v) for v in opts.shares.values()),
        "abandon_s / pickup_s / overbook": f"{opts.abandon_s} / {opts.pickup_s} / {opts.overbook}",
        "Locust workers": opts.workers,
        "open-file limit (each process)": opts.files,
        "duration limit": f"{opts.duration_s} s",
        "queue servers": ", ".join(platform.queue_urls),
        "token gates": ", ".join(platform.gate_urls),
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
    }
