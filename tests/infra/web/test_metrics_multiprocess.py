"""infra.web.metrics in prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR): a
scrape of one worker adds up every worker's counters and histograms, and still carries the
gauges read at scrape time. Each worker is a real process, as under `uvicorn --workers`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[3]

WORKER = """
from infra.web.metrics import Metrics
m = Metrics("mp")
m.counter("joins_total", "Joins", ["product"])
m.inc("joins_total", 2, product="a")
m.histogram("batch_size", "Batch", (1, 10, 100))
m.observe("batch_size", 5)
m.observe_request("GET", "/queue/{product_id}/status", 200, 0.002)
"""

SCRAPE = """
import asyncio, sys
from infra.web.metrics import Metrics, multiprocess_mode
assert multiprocess_mode()
m = Metrics("mp")
m.counter("joins_total", "Joins", ["product"])

async def line() -> dict:
    return {(("product", "a"),): 7.0}

m.gauge("line_length", "Line", line)
sys.stdout.write(asyncio.run(m.render()).decode())
"""


def _run(code: str, multiproc_dir: Path | None) -> str:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if multiproc_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_scrape_adds_up_every_workers_figures(tmp_path: Path) -> None:
    for _ in range(3):  # three workers, each its own process (and pid file)
        _run(WORKER, tmp_path)
    found = _samples(_run(SCRAPE, tmp_path))
    assert found[("mp_joins_total", (("product", "a"),))] == 6
    assert found[("mp_batch_size_count", ())] == 3
    assert found[("mp_batch_size_bucket", (("le", "10.0"),))] == 3
    route = (("method", "GET"), ("route", "/queue/{product_id}/status"), ("status", "200"))
    assert found[("mp_http_requests_total", route)] == 3
    assert found[("mp_line_length", (("product", "a"),))] == 7  # read at scrape, once


def test_without_the_directory_a_process_counts_only_its_own(tmp_path: Path) -> None:
    _run(WORKER, tmp_path)
    code = SCRAPE.replace("assert multiprocess_mode()", "assert not multiprocess_mode()")
    found = _samples(_run(code, None))
    # A fresh process reads no worker's files: nothing counted yet, only the gauge's reading.
    assert ("mp_joins_total", (("product", "a"),)) not in found
    assert not any(name == "mp_batch_size_count" for name, _ in found)
    assert found[("mp_line_length", (("product", "a"),))] == 7
