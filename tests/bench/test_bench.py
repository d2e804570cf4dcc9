"""`flashsale bench` end to end, at tiny sizes: real servers, real load generator, real
platform. Only the shape of what it writes is checked; its numbers are measurements, and no
test asserts a measurement."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.targets import KEYS, TARGETS

REPO = Path(__file__).resolve().parents[2]
MACHINE_KEYS = {
    "cpus",
    "cpu_model",
    "python",
    "platform",
    "load_avg_start",
    "load_avg_end",
    "date",
}
# Which figures each group of the bench measures.
GROUP_KEYS = {
    "queue": {
        "join_vs_hello",
        "status_vs_hello",
        "status_p99_1m_vs_1k",
        "redis_bytes_per_visitor",
        "redis_calls_per_join",
        "redis_calls_per_status",
        "redis_calls_per_admitted",
    },
    "gate": {"gate_vs_direct"},
    "orders": {"drain_vs_intake"},
    "sellout": {"sellout_vs_ideal"},
    "storm": {"polls_per_admitted", "notice_latency_p95_s"},
}


def _run_bench(tmp_path: Path, groups: str) -> dict[str, object]:
    out = tmp_path / "bench.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "--tiny", "--only", groups, "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=100)
    except subprocess.TimeoutExpired:
        # SIGINT, not SIGKILL: the bench then stops the servers it started.
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"the bench did not finish in time:\n{stdout[-3000:]}{stderr[-3000:]}")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return json.loads(out.read_text())


def _check_shape(result: dict[str, object], groups: str) -> None:
    assert set(result) == {*KEYS, "machine"}
    measured = set().union(*(GROUP_KEYS[g] for g in groups.split(",")))
    for key in KEYS:
        value = result[key]
        if key in measured:
            assert isinstance(value, int | float), (key, value)
            assert math.isfinite(value) and value > 0, (key, value)
        else:
            assert value is None, key
    machine = result["machine"]
    assert isinstance(machine, dict)
    assert set(machine) == MACHINE_KEYS
    assert machine["cpus"] >= 1


def test_every_target_has_a_group() -> None:
    assert set().union(*GROUP_KEYS.values()) == set(KEYS) == {t.key for t in TARGETS}


@pytest.mark.slow
def test_queue_figures_of_a_tiny_run(tmp_path: Path) -> None:
    result = _run_bench(tmp_path, "queue")
    _check_shape(result, "queue")
    # A join or a status cannot be served without asking Valkey at all.
    assert result["redis_calls_per_join"] >= 1
    assert result["redis_calls_per_status"] >= 1


@pytest.mark.slow
def test_platform_figures_of_a_tiny_run(tmp_path: Path) -> None:
    result = _run_bench(tmp_path, "orders,sellout,storm")
    _check_shape(result, "orders,sellout,storm")


def test_flashsale_bench_runs_python_m_bench() -> None:
    """The CLI hands its flags to `python -m bench`: an unknown group is refused there."""
    done = subprocess.run(
        [sys.executable, "-m", "infra", "bench", "--only", "nonsense"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown group(s): nonsense" in done.stderr
