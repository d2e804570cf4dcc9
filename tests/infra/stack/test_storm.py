"""`flashsale storm` as a user runs it: a small real storm through the real CLI (its own
`flashsale up`, Locust master and workers), and the invariant checker failing on a broken sale.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.constants import DEV_ADMIN_KEY
from infra.sale.shuffle import commitment, draw, new_seed
from infra.stack import cli
from infra.stack.storm.invariants import Check, check_finished, check_generator, check_sale
from infra.stack.storm.options import (
    MAX_REPLICAS,
    UsageError,
    add_arguments,
    file_warnings,
    options,
)
from infra.stack.storm.platform import flashsale_up

REPO = Path(__file__).resolve().parents[3]
STORM_TIMEOUT_S = 100.0
CHARTS = ("line_length", "admissions_per_s", "time_in_line", "polls_per_visitor", "outcomes")


def _clean_env() -> dict[str, str]:
    # The outer environment may point the test session at external servers: storm must embed.
    return {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}


async def _storm(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "infra", "storm", *args),
        cwd=REPO,
        env=_clean_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), STORM_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()  # SIGKILL reaches only the CLI: its children die with their pipes
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_small_storm_passes_its_invariants_and_writes_the_report(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    out_dir = tmp_path / "report"
    code, output = await _storm(
        *("--visitors", "40", "--stock", "10", "--mode", "shuffle", "--opens-in", "4"),
        *("--batch-size", "5", "--interval", "0.5", "--spawn-rate", "40"),
        *("--abandon-share", "0.1", "--refresh-share", "0.2", "--two-sales-share", "0.2"),
        *("--abandon-s", "15", "--pickup-s", "10", "--duration", "60"),
        *("--data-dir", str(embedded_data_dir), "--out", str(out_dir)),
    )
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in out_dir.glob("*.log")
    )
    assert code == 0, f"storm failed ({code}):\n{output[-5000:]}\n{logs}"
    assert "STORM PASSED: all invariants hold" in output
    lines = output.splitlines()
    # Both sales (a share holds a tab in each) and every invariant, each one PASS.
    for name in (
        "no oversell",
        "stock conserved",
        "stored orders equal stock sold",
        "shuffle fairness",
        "later joiners in FIFO order",
        "zero lost places",
        "reloads keep the place",
    ):
        passed = [line for line in lines if line.startswith(f"PASS  {name} [")]
        assert len(passed) == 2, (name, output[-3000:])
    assert "PASS  every visitor finished: 40 of 40" in output
    assert not any(line.startswith("FAIL") for line in lines), output
    # 40 visitors for 10 units: the main sale sells out (the second one has only a share).
    sold = [line for line in lines if line.startswith("PASS  no oversell") and "-b]" not in line]
    assert len(sold) == 1 and "left 0, sold 10;" in sold[0], sold

    report = (out_dir / "report.md").read_text()
    assert "40 visitors, 10 in stock" in report
    for chart in CHARTS:
        png = out_dir / f"{chart}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"]({chart}.png)" in report
    for csv_file in ("timeline.csv", "tabs.csv", "locust_stats.csv"):
        assert (out_dir / csv_file).stat().st_size > 0, csv_file
    # One row per tab plus the header: 40 visitors, some of them with a second tab.
    tab_rows = (out_dir / "tabs.csv").read_text().splitlines()
    assert 41 <= len(tab_rows) <= 81, len(tab_rows)


async def test_bad_input_is_one_line_and_exit_code_2() -> None:
    code, output = await _storm("--visitors", "10", "--stock", "5", "--abandon-share", "1.5")
    assert code == 2
    assert output.strip() == "flashsale storm: --abandon-share must be from 0 to 1"
    code, output = await _storm("--visitors", "10", "--replicas", "0")
    assert (code, output.strip()) == (2, "flashsale storm: --replicas must be from 1 to 9")
    code, output = await _storm("--visitors", "10", "--replicas", "two")
    assert code == 2 and len(output.strip().splitlines()) == 1, output


# --- replicas, workers and the open-file limit -----------------------------------------------

LIMIT = 20_000  # this project's machine: the hard open-file limit, which cannot be raised


def _opts(*argv: str, files: int = LIMIT) -> Any:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return options(parser.parse_args(argv), files)


def _refused(*argv: str, files: int = LIMIT) -> str:
    with pytest.raises(UsageError) as caught:
        _opts(*argv, files=files)
    return str(caught.value)


def test_replicas_are_checked_like_every_other_option() -> None:
    assert MAX_REPLICAS == cli.MAX_REPLICAS  # what `flashsale up --replicas` itself takes
    assert _opts("--visitors", "10").replicas == 1
    assert _opts("--visitors", "10", "--replicas", "3").replicas == 3
    for bad in ("0", "10", "-1"):
        assert _refused("--visitors", "10", "--replicas", bad) == "--replicas must be from 1 to 9"


def test_running_platforms_are_given_as_comma_separated_urls() -> None:
    q, g, s = "http://q:1,http://q:2/", "http://g:1, http://g:2", "http://s:1"
    opts = _opts("--visitors", "10", "--queue-url", q, "--gate-url", g, "--shop-url", s)
    assert opts.urls == {
        "queue": ("http://q:1", "http://q:2"),
        "gate": ("http://g:1", "http://g:2"),
        "shop": ("http://s:1",),
    }
    assert opts.replicas == 2  # the URLs say how many
    one_gate = _opts(
        "--visitors", "10", "--queue-url", q, "--gate-url", "http://g", "--shop-url", s
    )
    assert one_gate.urls is not None and one_gate.urls["gate"] == ("http://g",)
    base = ("--visitors", "10", "--queue-url", q, "--shop-url", s)
    assert "one for each --queue-url" in _refused(*base, "--gate-url", "http://a,http://b,http://c")
    assert "list the replicas' URLs" in _refused(*base, "--gate-url", g, "--replicas", "2")
    assert "takes one URL" in _refused(*base, "--gate-url", g, "--shop-url", f"{s},{s}")
    assert "http(s) URLs" in _refused(*base, "--gate-url", "g:1")
    assert "all three" in _refused("--visitors", "10", "--queue-url", q)


def test_workers_never_hold_more_visitors_than_their_open_files_allow() -> None:
    cores = os.cpu_count() or 1
    assert _opts("--visitors", "20000").workers == max(cores, 3)
    # 50,000 visitors at two sockets each, under 20,000 files a worker: 9,900 a worker.
    fifty = _opts("--visitors", "50000", "--replicas", "3")
    assert fifty.workers == max(cores, 6) and fifty.files == LIMIT
    assert 50_000 / fifty.workers * 2 <= LIMIT - 200
    assert _opts("--visitors", "50000", "--workers", "4").workers == 4  # 12,500: tight, allowed
    assert _refused("--visitors", "50000", "--workers", "2") == (
        "--workers 2 gives each Locust worker 25,000 visitors, more than its open-file limit "
        "of 20,000 holds; give --workers 6 or more (the default)"
    )
    # A worker of 10,000 visitors is tight: said at start. The queue servers of the old
    # 50,000 storm (one of them) are past their limit: it says how many would do.
    (worker,) = file_warnings(_opts("--visitors", "20000", "--workers", "2", "--replicas", "2"))
    assert worker.startswith("10,000 visitors per Locust worker (2 of them)"), worker
    lone = file_warnings(_opts("--visitors", "50000", "--two-sales-share", "0.05"))
    assert len(lone) == 1 and lone[0].startswith("52,500 tabs per queue server (1 of them)"), lone
    assert lone[0].endswith("use --replicas 3 or more"), lone
    assert file_warnings(_opts("--visitors", "50000", "--replicas", "3")) == []
    # A running platform's limit is its own: nothing said about it.
    urls = ("--queue-url", "http://q", "--gate-url", "http://g", "--shop-url", "http://s")
    assert file_warnings(_opts("--visitors", "50000", *urls)) == []


def _spread(out_dir: Path) -> Counter[str]:
    with (out_dir / "tabs.csv").open() as f:
        return Counter(row["replica"] for row in csv.DictReader(f))


SMALL = (
    *("--visitors", "30", "--stock", "10", "--mode", "shuffle", "--opens-in", "4"),
    *("--batch-size", "5", "--interval", "0.5", "--spawn-rate", "30"),
    *("--refresh-share", "0.2", "--two-sales-share", "0.2"),
    *("--abandon-s", "15", "--pickup-s", "10", "--duration", "50"),
)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_storm_over_two_replicas_spreads_its_visitors_and_passes(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    out_dir = tmp_path / "report"
    code, output = await _storm(
        *SMALL, "--replicas", "2", "--data-dir", str(embedded_data_dir), "--out", str(out_dir)
    )
    assert code == 0, f"storm failed ({code}):\n{output[-5000:]}"
    assert "STORM PASSED: all invariants hold" in output
    assert "PASS  every visitor finished: 30 of 30" in output
    # Both queue servers and both gates, replica i on each port + 10 i, as `flashsale up` has
    # them (the report's settings table: the console wraps its lines).
    cells = [
        [c.strip() for c in line.strip("| ").split(" | ")]
        for line in (out_dir / "report.md").read_text().splitlines()
        if line.startswith("| ")
    ]
    rows = {c[0]: c[1] for c in cells if len(c) == 2}
    for row in ("queue servers", "token gates"):
        urls = rows[row].split(", ")
        port = int(urls[0].rsplit(":", 1)[1])
        assert urls == [urls[0], urls[0].replace(f":{port}", f":{port + 10}")], rows[row]
    # Visitor k of worker w on replica (w + k) mod 2: an even split of the visitors, every tab
    # of a visitor on its visitor's replica.
    spread = _spread(out_dir)
    assert set(spread) == {"0", "1"} and sum(spread.values()) >= 30, spread
    assert abs(spread["0"] - spread["1"]) <= 10, spread
    assert f"tabs per queue replica: 0: {spread['0']}, 1: {spread['1']}" in output


async def _requests(http: httpx.AsyncClient, url: str, route_part: str) -> float:
    """Responses a process counted on its routes containing ``route_part`` (its /metrics)."""
    text = (await http.get(f"{url}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if "_http_requests_total{" in line and route_part in line
    )


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_storm_against_running_replicas_reaches_every_one(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    out_dir = tmp_path / "report"
    up = flashsale_up(embedded_data_dir, tmp_path / "up.log", DEV_ADMIN_KEY, replicas=2)
    async with up as platform, httpx.AsyncClient(trust_env=False) as http:
        code, output = await _storm(
            *SMALL,
            *("--queue-url", ",".join(platform.queue_urls)),
            *("--gate-url", ",".join(platform.gate_urls), "--shop-url", platform.shop_url),
            *("--out", str(out_dir)),
        )
        assert code == 0, f"storm failed ({code}):\n{output[-5000:]}"
        # Seen from the servers: each queue server answered joins and polls, each gate orders.
        for url in platform.queue_urls:
            assert await _requests(http, url, "/status") > 0, url
            assert await _requests(http, url, "/join") > 0, url
        for url in platform.gate_urls:
            assert await _requests(http, url, "/orders") > 0, url
    assert set(_spread(out_dir)) == {"0", "1"}


# --- the checker on broken input -------------------------------------------------------------


def _stats(**overrides: Any) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "waiting": 0,
        "admitted": 10,
        "active": 0,
        "tokens_issued": 10,
        "orders": {"pending": 0, "placed": 10, "paid": 0, "cancelled": 0},
        "stock_total": 10,
        "stock_left": 0,
        "admit_rate_per_s": 5.0,
    }
    stats.update(overrides)
    return stats


def _tab(joined: float, admitted: float | None, **extra: Any) -> dict[str, Any]:
    return {
        "product": "p",
        "behaviour": "steady",
        "join_sent": joined,
        "join_done": joined + 0.01,
        "join_state": "waiting",
        "admitted_expiry": admitted,
        "outcome": "bought" if admitted is not None else "sold_out",
        "lost": 0,
        **extra,
    }


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name.split(" [")[0]: c for c in checks}


def test_the_checker_passes_a_sound_fifo_sale() -> None:
    tabs = [_tab(i, 100.0 + i // 5) for i in range(10)] + [_tab(10 + i, None) for i in range(5)]
    checks = check_sale("p", "fifo", _stats(), tabs)
    assert all(c.ok for c in checks), [c.line() for c in checks]


def test_the_checker_fails_on_oversell() -> None:
    tabs = [_tab(i, 100.0) for i in range(11)]
    oversold = _stats(stock_left=-1, orders={"pending": 0, "placed": 11, "paid": 0, "cancelled": 0})
    checks = _by_name(check_sale("p", "fifo", oversold, tabs))
    assert not checks["no oversell"].ok
    assert "left -1" in checks["no oversell"].detail
    # More orders told "taken" than the stock, even with the counters looking sane.
    told = _by_name(check_sale("p", "fifo", _stats(), tabs))
    assert not told["no oversell"].ok


def test_the_checker_fails_when_stock_or_orders_do_not_add_up() -> None:
    tabs = [_tab(i, 100.0) for i in range(10)]
    lost_order = _stats(orders={"pending": 0, "placed": 9, "paid": 0, "cancelled": 0})
    checks = _by_name(check_sale("p", "fifo", lost_order, tabs))
    assert not checks["stock conserved"].ok
    assert not checks["stored orders equal stock sold"].ok
    undrained = _stats(orders={"pending": 3, "placed": 7, "paid": 0, "cancelled": 0})
    assert not _by_name(check_sale("p", "fifo", undrained, tabs))[
        "stored orders equal stock sold"
    ].ok


def test_the_checker_fails_on_unfair_or_lost_places() -> None:
    # FIFO: the visitor who joined at t=5 was admitted a batch before the one who joined at 1.
    tabs = [_tab(i, 100.0 + (i == 1) - (i == 5)) for i in range(10)]
    assert not _by_name(check_sale("p", "fifo", _stats(), tabs))["FIFO fairness"].ok
    # ... or never, while someone who joined after it was.
    tabs = [_tab(0, None)] + [_tab(i, 100.0) for i in range(1, 11)]
    assert not _by_name(check_sale("p", "fifo", _stats(), tabs))["FIFO fairness"].ok
    # A visitor who kept polling and still lost its place.
    tabs = [_tab(i, 100.0, lost=int(i == 3)) for i in range(10)]
    assert not _by_name(check_sale("p", "fifo", _stats(), tabs))["zero lost places"].ok
    # A reload that handed out a second place.
    tabs = [_tab(i, 100.0, refresh_new_place=int(i == 2)) for i in range(10)]
    assert not _by_name(check_sale("p", "fifo", _stats(), tabs))["reloads keep the place"].ok
    # An admission that expired before its polling visitor came back: a turn lost, though
    # the order of everyone else is still judged (and fair).
    tabs = [_tab(i, 100.0) for i in range(9)] + [_tab(0.5, None, outcome="expired")]
    checks = _by_name(check_sale("p", "fifo", _stats(stock_left=1), tabs))
    assert not checks["zero lost places"].ok
    assert "1 admissions expired" in checks["zero lost places"].detail
    assert checks["FIFO fairness"].ok
    assert not check_finished(40, 39).ok
    assert not check_finished(40, 41).ok  # Locust ran more visitors than asked
    # A starved Locust worker woke its visitors 12 s late: the storm measured the generator.
    assert check_generator([_tab(0, 100.0, late_s=0.2), _tab(1, 100.0, late_s=1.5)]).ok
    assert not check_generator([_tab(0, 100.0, late_s=0.2), _tab(1, 100.0, late_s=12.0)]).ok


def test_the_checker_fails_a_shuffle_out_of_draw_order_or_with_a_forged_draw() -> None:
    seed = new_seed()
    info = {"shuffle_seed": seed, "shuffle_commitment": commitment(seed)}
    early = [
        _tab(i, None, join_state="not_started", visitor_id=f"v{i}", draw=draw(seed, f"v{i}"))
        for i in range(10)
    ]
    for batch, tab in enumerate(sorted(early, key=lambda t: t["draw"])):
        tab["admitted_expiry"], tab["outcome"] = 100.0 + batch // 5, "bought"
    late = [_tab(20 + i, 102.0, outcome="order_refused") for i in range(5)]
    checks = check_sale("p", "shuffle", _stats(), early + late, info)
    assert all(c.ok for c in checks), [c.line() for c in checks]

    swapped = [dict(t) for t in early]
    ordered = sorted(swapped, key=lambda t: t["draw"])
    ordered[0]["admitted_expiry"], ordered[-1]["admitted_expiry"] = 101.0, 100.0
    assert not _by_name(check_sale("p", "shuffle", _stats(), swapped + late, info))[
        "shuffle fairness"
    ].ok
    jumped = [*early, _tab(20, 99.0)]
    assert not _by_name(check_sale("p", "shuffle", _stats(), jumped, info))["shuffle fairness"].ok
    forged = [dict(t) for t in early]
    forged[0]["draw"] = "0" * 64
    assert not _by_name(check_sale("p", "shuffle", _stats(), forged, info))["draw verifiable"].ok
    wrong_seed = {**info, "shuffle_commitment": commitment(new_seed())}
    assert not _by_name(check_sale("p", "shuffle", _stats(), early, wrong_seed))[
        "draw verifiable"
    ].ok
