"""The supervisor with tiny real children: backoff, its reset, escalation to SIGKILL, orphans."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from infra.stack.supervisor import ChildNotReady, ChildSpec, Supervisor

RESTART_MSG = "child exited, restarting"


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def _eventually(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


def _restarts(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == RESTART_MSG]


async def test_backoff_doubles_up_to_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flashsale.supervisor")
    async with Supervisor(backoff_initial_s=0.05, backoff_max_s=0.2) as supervisor:
        await supervisor.add(ChildSpec("crasher", _python("import sys; sys.exit(3)")))
        await _eventually(lambda: len(_restarts(caplog)) >= 5)
    records = _restarts(caplog)[:5]
    assert [r.restart_in_s for r in records] == [0.05, 0.1, 0.2, 0.2, 0.2]  # type: ignore[attr-defined]
    assert {(r.child, r.exit_code) for r in records} == {("crasher", 3)}  # type: ignore[attr-defined]


async def test_backoff_resets_after_a_healthy_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flashsale.supervisor")
    supervisor = Supervisor(backoff_initial_s=0.05, backoff_max_s=1.0, healthy_reset_s=0.2)
    async with supervisor:
        # Each run outlives healthy_reset_s, so each crash counts as the first one.
        await supervisor.add(
            ChildSpec("slow-crasher", _python("import sys, time; time.sleep(0.3); sys.exit(1)"))
        )
        await _eventually(lambda: len(_restarts(caplog)) >= 3)
    assert [r.restart_in_s for r in _restarts(caplog)[:3]] == [0.05] * 3  # type: ignore[attr-defined]


async def test_killed_child_is_restarted_and_answers_again(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    code = f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"

    async def probe() -> None:
        if not marker.exists():
            raise FileNotFoundError(marker)

    async with Supervisor(backoff_initial_s=0.05) as supervisor:
        child = await supervisor.add(ChildSpec("sleeper", _python(code), probe=probe))
        await supervisor.wait_ready(child, timeout_s=20)
        first = child.pid
        assert first is not None
        marker.unlink()
        os.kill(first, signal.SIGKILL)
        await _eventually(lambda: child.pid not in (None, first))
        await supervisor.wait_ready(child, timeout_s=20)
        assert child.restarts == 1
    assert child.pid is None
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE


async def test_stop_escalates_to_sigkill_and_is_idempotent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flashsale.supervisor")
    marker = tmp_path / "deaf"
    code = (
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"
    )

    async def probe() -> None:
        if not marker.exists():
            raise FileNotFoundError(marker)

    supervisor = Supervisor(stop_timeout_s=0.5)
    polite = await supervisor.add(ChildSpec("polite", _python("import time; time.sleep(60)")))
    deaf = await supervisor.add(ChildSpec("deaf", _python(code), probe=probe))
    await supervisor.wait_ready(deaf, timeout_s=20)
    procs = [psutil.Process(c.pid) for c in (polite, deaf) if c.pid is not None]
    await supervisor.stop()
    await supervisor.stop()
    assert (polite.pid, deaf.pid) == (None, None)
    assert deaf.process is not None and deaf.process.returncode == -signal.SIGKILL
    assert polite.process is not None and polite.process.returncode == -signal.SIGTERM
    _, alive = psutil.wait_procs(procs, timeout=5)
    assert alive == []
    summary = [r for r in caplog.records if r.getMessage() == "supervisor stopped"]
    assert [(r.children, r.killed) for r in summary] == [(2, 1)]  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError):
        await supervisor.add(ChildSpec("late", _python("pass")))


async def test_wait_ready_gives_up_at_the_deadline() -> None:
    async def never() -> None:
        raise ConnectionRefusedError("nobody home")

    async with Supervisor() as supervisor:
        child = await supervisor.add(
            ChildSpec("mute", _python("import time; time.sleep(60)"), probe=never)
        )
        with pytest.raises(ChildNotReady, match="nobody home"):
            await supervisor.wait_ready(child, timeout_s=0.3)


async def test_children_die_with_a_sigkilled_supervisor() -> None:
    script = (
        "import asyncio, sys\n"
        "from infra.stack.supervisor import ChildSpec, Supervisor\n"
        "async def main():\n"
        "    sup = Supervisor()\n"
        "    child = await sup.add(ChildSpec('sleeper', [sys.executable, '-c', "
        "'import time; time.sleep(60)']))\n"
        "    print(child.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        orphan = psutil.Process(int(line))
    finally:
        proc.kill()
        await proc.wait()
    _, alive = await asyncio.to_thread(psutil.wait_procs, [orphan], 10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []


async def test_state_follows_the_child_through_a_crash_and_its_probe(tmp_path: Path) -> None:
    marker = tmp_path / "answering"
    code = f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"

    async def probe() -> None:
        if not marker.exists():
            raise FileNotFoundError(marker)

    async with Supervisor(backoff_initial_s=0.3) as supervisor:
        child = await supervisor.add(ChildSpec("app", _python(code), probe=probe))
        worker = await supervisor.add(ChildSpec("worker", _python("import time; time.sleep(60)")))
        assert worker.state == "up"  # no probe: up once spawned
        await supervisor.wait_ready(child, timeout_s=20)
        assert child.state == "up"
        first = child.pid
        assert first is not None
        marker.unlink()
        os.kill(first, signal.SIGKILL)
        await _eventually(lambda: child.state == "restarting")
        assert child.last_exit_code == -signal.SIGKILL
        # Respawned, it is "starting" until the probe answers again (it re-creates the marker).
        await _eventually(lambda: child.pid not in (None, first))
        await _eventually(lambda: child.state == "up")
        assert child.restarts == 1
    assert (child.state, worker.state) == ("stopped", "stopped")
