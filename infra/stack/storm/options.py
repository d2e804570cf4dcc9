"""The options of `flashsale storm`: flags, their checks and the defaults derived from them.

Only the standard library here: `flashsale up` builds the same parser and must start fast.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from infra.constants import DEV_ADMIN_KEY

LOCUSTFILE = Path(__file__).resolve().parents[3] / "locustfiles" / "flash_sale.py"
BURST_RATE = 200.0  # visitors per second: a drop's first seconds
# A soak is about holding, not peaking: a rate the two-core machine sustains for ten minutes
# next to everything else it runs, well under the admission rate (50/s by default) so the
# line stays short and steady instead of growing for the whole run.
STEADY_RATE = 10.0
STEADY_MAX_ERRORS = 0.001  # issue 9: a ten-minute soak with under 0.1 % errors
RSS_EVERY_S = 60.0  # the platform's memory, sampled each minute
MAX_REPLICAS = 9  # `flashsale up --replicas` takes 1 to 9 (infra.stack.cli.MAX_REPLICAS)
# Open files. Every waiting visitor keeps its keep-alive connection between polls, so each
# holds a socket in its Locust worker and one in its queue server, for the whole wait; a
# visitor with a tab in each sale, or one buying at the gate, holds two or three for a while.
# A worker is planned at two sockets a visitor: well clear of its limit, never at it.
SOCKETS_PER_VISITOR = 2
FILES_SPARE = 200  # a process's own files: Redis connections, logs, the listener, Locust's ZMQ


class UsageError(Exception):
    """Bad input on the command line: one line, exit code 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--visitors", type=int, help="Locust users, one visitor each (a burst storm)")
    a("--stock", type=int, help="units on sale in each sale (default: one per visitor)")
    a("--mode", choices=("shuffle", "fifo"), default="shuffle", help="queue mode of the sale")
    a(
        "--duration",
        type=float,
        help="with --visitors: the longest the Locust run may last (default: ample); without: "
        "a steady storm, visitors arriving at --spawn-rate for this many seconds (a soak)",
    )
    a("--batch-size", type=int, default=50, help="visitors admitted per tick (default 50)")
    a("--interval", type=float, default=1.0, help="seconds between ticks (default 1.0)")
    a(
        "--spawn-rate",
        type=float,
        help=f"visitors arriving per second (default {BURST_RATE:g}; {STEADY_RATE:g} when steady)",
    )
    a("--opens-in", type=float, help="seconds to the sale's start (the pre-queue)")
    a("--abandon-share", type=float, default=0.0, help="share who stop polling (0..1)")
    a("--refresh-share", type=float, default=0.0, help="share who reload and re-join (0..1)")
    a("--two-sales-share", type=float, default=0.0, help="share with a tab in two sales (0..1)")
    a("--abandon-s", type=int, default=90, help="sale's abandon_s (poll cap is a third)")
    a("--pickup-s", type=int, default=60, help="sale's pickup_s (default 60)")
    a("--overbook", type=float, default=1.0, help="sale's overbook (default 1.0)")
    a(
        "--workers",
        type=int,
        help="Locust workers (default: one per core, more if a worker would hold more "
        f"visitors than its open-file limit allows at {SOCKETS_PER_VISITOR} sockets each)",
    )
    a(
        "--replicas",
        type=int,
        help=f"start `flashsale up --replicas N` (1-{MAX_REPLICAS}) and spread the visitors "
        "over its N queue servers and gates (default 1)",
    )
    a("--drain-timeout", type=float, default=120.0, help="seconds to wait for stored orders")
    a("--out", type=Path, help="report directory (default bench/results/storm-<timestamp>)")
    a("--data-dir", type=Path, help="data of the embedded servers (default: a temp dir)")
    a("--queue-url", help="use a running platform: its queue server(s), comma-separated")
    a("--gate-url", help="... its token gate(s), comma-separated")
    a("--shop-url", help="... its shop (admin API)")
    a("--admin-key", help="admin bearer key (default: the dev key)")
    a(
        "--max-error-ratio",
        type=float,
        help=f"failed ÷ all requests a steady storm may have (default {STEADY_MAX_ERRORS:g})",
    )
    a("--rss-every", type=float, default=RSS_EVERY_S, help=argparse.SUPPRESS)
    a("--locustfile", type=Path, default=LOCUSTFILE, help=argparse.SUPPRESS)


@dataclass(frozen=True)
class Options:
    visitors: int
    stock: int
    mode: str
    duration_s: int
    steady: bool  # visitors arrive evenly for the whole storm (a soak), not in one burst
    max_error_ratio: float | None  # the share of failed requests that fails the storm
    rss_every_s: float
    batch_size: int
    interval_s: float
    spawn_rate: float
    opens_in_s: float
    shares: dict[str, float]
    abandon_s: int
    pickup_s: int
    overbook: float
    workers: int
    replicas: int  # queue servers the visitors are spread over (with URLs: how many given)
    files: int  # the open-file limit of each process (Locust workers, our platform's)
    drain_timeout_s: float
    out: Path
    data_dir: Path | None
    # A running platform: "queue" and "gate" hold one URL per replica, "shop" one URL.
    urls: dict[str, tuple[str, ...]] | None
    admin_key: str
    locustfile: Path
    stamp: str


def open_file_limit() -> int:
    """This process's open-file limit: what the Locust workers and `flashsale up` inherit."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def visitors_per_process(files: int) -> int:
    """The visitors one process (a Locust worker, a queue server) holds at most, with margin."""
    return max(1, (files - FILES_SPARE) // SOCKETS_PER_VISITOR)


def _url_list(flag: str, value: str | None) -> tuple[str, ...]:
    urls = tuple(u.strip().rstrip("/") for u in (value or "").split(",") if u.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")) or "," in url:
            raise UsageError(f"--{flag} takes http(s) URLs, comma-separated; got {url!r}")
    return urls


def _platform_urls(args: argparse.Namespace) -> dict[str, tuple[str, ...]] | None:
    given = {k: _url_list(f"{k}-url", getattr(args, f"{k}_url")) for k in ("queue", "gate", "shop")}
    if any(given.values()) and not all(given.values()):
        raise UsageError("a running platform needs all three of --queue-url --gate-url --shop-url")
    if not all(given.values()):
        return None
    if len(given["shop"]) > 1:
        raise UsageError("--shop-url takes one URL: the admin API of the running platform")
    if len(given["gate"]) not in (1, len(given["queue"])):
        raise UsageError("give one --gate-url, or one for each --queue-url (replica i's gate)")
    if args.replicas is not None:
        raise UsageError(
            "--replicas starts a platform of its own; with --queue-url, list the replicas' "
            "URLs, comma-separated"
        )
    return given


def _workers(args: argparse.Namespace, visitors: int, files: int) -> int:
    """One per core, unless a worker would then hold more visitors than its files allow."""
    needed = math.ceil(visitors / visitors_per_process(files))
    if args.workers is None:
        return max(os.cpu_count() or 1, needed)
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    each = math.ceil(visitors / args.workers)
    if each > files - FILES_SPARE:
        # Past one socket a visitor it cannot even connect them all: refused, not warned.
        raise UsageError(
            f"--workers {args.workers} gives each Locust worker {each:,} visitors, more than its "
            f"open-file limit of {files:,} holds; give --workers {needed} or more (the default)"
        )
    return args.workers


def options(args: argparse.Namespace, files: int | None = None) -> Options:
    """Checked options; raises UsageError with the one line to show. ``files`` is the
    open-file limit of every process of the storm (default: ours, which they inherit)."""
    files = open_file_limit() if files is None else files
    steady = args.visitors is None
    if steady and args.duration is None:
        raise UsageError("give --visitors (a burst storm) or --duration (a steady storm)")
    if args.duration is not None and not args.duration > 0:
        raise UsageError("--duration must be more than 0")
    spawn_rate = args.spawn_rate
    if spawn_rate is None:
        spawn_rate = STEADY_RATE if steady else BURST_RATE
    if not spawn_rate > 0:
        raise UsageError("--spawn-rate must be more than 0")
    visitors = max(1, round(spawn_rate * args.duration)) if steady else args.visitors
    stock = visitors if args.stock is None else args.stock
    for name, value, low in (
        ("visitors", visitors, 1),
        ("stock", stock, 0),
        ("batch-size", args.batch_size, 1),
    ):
        if value < low:
            raise UsageError(f"--{name} must be at least {low}")
    for name in ("interval", "drain_timeout", "rss_every"):
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be more than 0")
    max_errors = args.max_error_ratio
    if max_errors is None and steady:
        max_errors = STEADY_MAX_ERRORS
    if max_errors is not None and not 0 <= max_errors <= 1:
        raise UsageError("--max-error-ratio must be from 0 to 1")
    shares = {
        "abandon": args.abandon_share,
        "refresh": args.refresh_share,
        "two_sales": args.two_sales_share,
    }
    for name, share in shares.items():
        if not 0 <= share <= 1:
            raise UsageError(f"--{name.replace('_', '-')}-share must be from 0 to 1")
    if sum(shares.values()) > 1:
        raise UsageError("the abandon, refresh and two-sales shares add up to more than 1")
    if not 10 <= args.abandon_s <= 86_400 or not 5 <= args.pickup_s <= 86_400:
        raise UsageError("--abandon-s must be 10..86400 and --pickup-s 5..86400")
    if not 1 <= args.overbook <= 10:
        raise UsageError("--overbook must be from 1 to 10")
    urls = _platform_urls(args)
    replicas = args.replicas if args.replicas is not None else 1
    if urls is not None:
        replicas = len(urls["queue"])
    elif not 1 <= replicas <= MAX_REPLICAS:
        raise UsageError(f"--replicas must be from 1 to {MAX_REPLICAS}")
    workers = _workers(args, visitors, files)
    if not args.locustfile.is_file():
        raise UsageError(f"no locustfile at {args.locustfile}")
    spawn_s = visitors / spawn_rate
    opens_in = args.opens_in
    if opens_in is None:
        # Shuffle: about half the storm arrives in the pre-queue and is drawn at the start.
        # A steady storm opens at once: a pre-queue would pile arrivals up, not hold a pace.
        shuffle_burst = args.mode == "shuffle" and not steady
        opens_in = max(5.0, round(spawn_s / 2)) if shuffle_burst else 0.0
    if opens_in < 0:
        raise UsageError("--opens-in must not be negative")
    # Arrivals, the sale itself, a few of the slowest polls (a third of abandon_s), slack.
    selling = stock * args.interval / args.batch_size
    duration = opens_in + spawn_s + 3 * selling + args.abandon_s + 60
    if steady:
        # The sale goes on while visitors arrive: only what admission still owes the last
        # arrivals comes after them (a line that outgrew the admission rate).
        duration = spawn_s + max(0.0, selling - spawn_s) + args.abandon_s + 60
    if not steady and args.duration is not None:
        duration = args.duration
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Options(
        visitors=visitors,
        stock=stock,
        mode=args.mode,
        duration_s=max(1, round(duration)),
        steady=steady,
        max_error_ratio=max_errors,
        rss_every_s=args.rss_every,
        batch_size=args.batch_size,
        interval_s=args.interval,
        spawn_rate=spawn_rate,
        opens_in_s=opens_in,
        shares=shares,
        abandon_s=args.abandon_s,
        pickup_s=args.pickup_s,
        overbook=args.overbook,
        workers=workers,
        replicas=replicas,
        files=files,
        drain_timeout_s=args.drain_timeout,
        out=args.out if args.out is not None else Path("bench/results") / f"storm-{stamp}",
        data_dir=args.data_dir,
        urls=urls,
        admin_key=args.admin_key or DEV_ADMIN_KEY,
        locustfile=args.locustfile,
        stamp=stamp,
    )


def file_warnings(opts: Options) -> list[str]:
    """What the open-file limit will cut short, said before the storm rather than found in
    its logs: the visitors' connections per queue server (ours only: a running platform's
    limit is its own) and per Locust worker (only with --workers: the default fits)."""
    lines = []
    cap = opts.files - FILES_SPARE
    # A visitor with a tab in each sale polls both at once, on two connections.
    tabs = math.ceil(opts.visitors * (1 + opts.shares["two_sales"]))
    per_replica = math.ceil(tabs / opts.replicas)
    if opts.urls is None and per_replica > cap:
        needed = math.ceil(tabs / cap)
        more = (
            f"use --replicas {needed} or more"
            if needed <= MAX_REPLICAS
            else "raise the limit (ulimit -n)"
        )
        # Said, not refused: tabs that are done close their connections, so a storm whose
        # line never holds them all at once still fits (the 20,000 one of the README does).
        lines.append(
            f"{per_replica:,} tabs per queue server ({opts.replicas} of them), but its open-file "
            f"limit of {opts.files:,} holds about {cap:,} waiting at once; {more}"
        )
    per_worker = math.ceil(opts.visitors / opts.workers)
    if per_worker > visitors_per_process(opts.files):
        lines.append(
            f"{per_worker:,} visitors per Locust worker ({opts.workers} of them) at up to "
            f"{SOCKETS_PER_VISITOR} sockets each, with an open-file limit of {opts.files:,}"
        )
    return lines
