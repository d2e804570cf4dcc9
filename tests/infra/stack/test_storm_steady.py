"""`flashsale storm --duration D`: a steady storm (the soak of issue 9), and the platform's
memory (RSS) it samples into its report."""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import signal
import sys
from pathlib import Path

import orjson
import pytest

from infra.stack.storm.options import STEADY_MAX_ERRORS, STEADY_RATE, add_arguments, options
from infra.stack.storm.report import write_rss
from infra.stack.storm.rss import growth, sample_tree

REPO = Path(__file__).resolve().parents[3]
PLATFORM = ("flashsale up", "queue_server", "token_gate", "shop", "scheduler", "shop.worker")
EMBEDDED = ("valkey-server", "postgres", "postgres children", "tansu")


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_duration_alone_is_a_steady_storm_with_a_stock_for_everyone() -> None:
    opts = options(_parse("--duration", "600"))
    assert opts.steady
    assert (opts.spawn_rate, opts.visitors, opts.stock) == (STEADY_RATE, 6000, 6000)
    assert opts.opens_in_s == 0  # no pre-queue piling arrivals up
    assert opts.max_error_ratio == STEADY_MAX_ERRORS
    # Locust may run past the arrivals: the last visitors still wait, poll and buy.
    assert opts.duration_s > 600
    assert opts.rss_every_s == 60

    custom = options(_parse("--duration", "60", "--spawn-rate", "3", "--stock", "10"))
    assert (custom.visitors, custom.stock, custom.steady) == (180, 10, True)
    # With --visitors it stays a burst, --duration its limit, and no error budget.
    burst = options(_parse("--visitors", "40", "--stock", "10", "--duration", "60"))
    assert (burst.steady, burst.duration_s, burst.max_error_ratio) == (False, 60, None)


async def test_rss_of_a_real_process_tree(tmp_path: Path) -> None:
    # A root with two children, one of which has a child of its own (like the postmaster).
    grandchild = "import subprocess, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen(['sleep', '30'])\n"
        f"subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
        "print('up', flush=True)\n"
        "time.sleep(30)\n"
    )
    root = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    try:
        assert root.stdout is not None
        assert await asyncio.wait_for(root.stdout.readline(), 10) == b"up\n"
        for _ in range(100):  # the grandchild is started by the child, a moment later
            samples = sample_tree(root.pid, 0.0)
            if any(s.process.endswith(" children") for s in samples):
                break
            await asyncio.sleep(0.05)
        names = [s.process for s in samples]
        python = os.path.basename(sys.executable)
        assert names == ["flashsale up", "sleep", python, f"{python} children"], names
        assert all(s.rss_kb > 0 for s in samples)
        again = sample_tree(root.pid, 5.0)
        grown = growth(samples + again)
        assert set(grown) == set(names)
        assert all(g["samples"] == 2 and g["last_vs_first"] > 0 for g in grown.values())
        # Shorter than the warm-up: growth after it is judged from the first sample...
        assert all(g["warm_kb"] == g["first_kb"] for g in grown.values())
        # ... and from the first sample past a minute once there is one.
        late = sample_tree(root.pid, 61.0)
        warmed = growth(samples + again + late + sample_tree(root.pid, 90.0))
        assert warmed["sleep"]["warm_kb"] == next(s.rss_kb for s in late if s.process == "sleep")

        lines = write_rss(tmp_path, samples + again)
        assert "| sleep |" in "\n".join(lines)
        with (tmp_path / "rss.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 8 and {r["process"] for r in rows} == set(names)
        assert orjson.loads((tmp_path / "rss.json").read_bytes())["growth"]["sleep"]["samples"] == 2
    finally:
        os.killpg(root.pid, signal.SIGKILL)  # the root and all it started: its own session
        await root.wait()
    assert sample_tree(root.pid, 9.0) == []  # gone: nothing sampled, nothing raised


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_short_steady_storm_reports_the_rss_of_every_process(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    out_dir = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "infra", "storm", "--duration", "4", "--spawn-rate", "5"),
        *("--mode", "fifo", "--abandon-s", "15", "--rss-every", "1"),
        *("--data-dir", str(embedded_data_dir), "--out", str(out_dir)),
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        raw, _ = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = raw.decode(errors="replace")
    assert proc.returncode == 0, output[-4000:]
    assert "PASS  errors under 0.10%" in output
    assert "PASS  every visitor finished: 20 of 20" in output

    report = (out_dir / "report.md").read_text()
    assert "## Memory of the platform (RSS)" in report and "](rss.png)" in report
    assert (out_dir / "rss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grown = orjson.loads((out_dir / "rss.json").read_bytes())["growth"]
    for name in (*PLATFORM, *EMBEDDED):
        assert name in grown, (name, sorted(grown))
        # The start, one a second, and the one after the drain.
        assert grown[name]["samples"] >= 3, (name, grown[name])
        assert grown[name]["first_kb"] > 1000  # a real process: over a megabyte resident
        assert f"| {name} |" in report
        assert f"rss {name}: first " in output
    with (out_dir / "rss.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["process"] for r in rows} >= set(PLATFORM)
    assert len({r["t"] for r in rows}) >= 3
