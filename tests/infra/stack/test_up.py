"""`flashsale up` as a user runs it: READY, health, supervision, a clean stop, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from infra.stack.embedded import free_port

pytestmark = pytest.mark.slow

APPS = ("gate", "queue", "shop", "scheduler", "worker")


@dataclass
class Up:
    proc: asyncio.subprocess.Process
    ports: dict[str, int]
    data_dir: Path
    stderr_path: Path
    ready_line: str

    def url(self, app: str) -> str:
        return f"http://127.0.0.1:{self.ports[app]}"

    async def next_line(self, timeout_s: float = 30.0) -> str:
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)).decode().strip()

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.stderr_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(raw)
                if isinstance(parsed, dict):
                    lines.append(parsed)
        return lines

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    async def terminate(self, timeout_s: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout_s)


def _clean_env(**extra: str) -> dict[str, str]:
    # The outer environment may point the test session at external servers: up must embed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    env.update(extra)
    return env


async def _spawn(data_dir: Path, log: Path, *args: str, **env: str) -> asyncio.subprocess.Process:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "infra", "up", "--data-dir", str(data_dir), *args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=fd,
            env=_clean_env(**env),
        )
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def flashsale_up(tmp_path: Path, data_dir: Path, *args: str) -> AsyncIterator[Up]:
    ports = {app: free_port() for app in APPS}
    port_args = [x for app in APPS for x in (f"--{app}-port", str(ports[app]))]
    stderr_path = tmp_path / "up.stderr"
    proc = await _spawn(data_dir, stderr_path, "--dev", *port_args, *args)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode().strip()
        if not line.startswith("READY "):
            tail = "\n".join(stderr_path.read_text().splitlines()[-30:])
            raise AssertionError(f"no READY line (got {line!r}); its stderr ends:\n{tail}")
        yield Up(proc, ports, data_dir, stderr_path, line)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.1)


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            return (await client.get(f"{url}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


def _child(up: Up, match: Callable[[psutil.Process], bool]) -> psutil.Process:
    found = [p for p in psutil.Process(up.proc.pid).children() if match(p)]
    assert len(found) == 1, found
    return found[0]


def _is_app(module: str) -> Callable[[psutil.Process], bool]:
    return lambda p: p.cmdline()[-2:] == ["-m", module]


def _is_valkey(p: psutil.Process) -> bool:
    return p.name() == "valkey-server"


async def test_up_is_ready_healthy_and_stops_cleanly(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    async with flashsale_up(tmp_path, embedded_data_dir) as up:
        assert up.ready_line == (
            f"READY gate={up.url('gate')} queue={up.url('queue')} shop={up.url('shop')}"
        )
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            for app in APPS:
                response = await client.get(f"{up.url(app)}/healthz")
                assert (app, response.status_code) == (app, 200)
                assert response.json() == {"status": "ok"}
        children = up.children()
        names = {p.name() for p in children}
        assert {"valkey-server", "postgres"} <= names
        for module in ("queue_server", "scheduler", "shop", "token_gate"):
            _child(up, _is_app(module))

        # A second `up` on the same data directory would corrupt the AOF: it must refuse.
        other_ports = [x for app in APPS for x in (f"--{app}-port", str(free_port()))]
        second_log = tmp_path / "second.stderr"
        second = await _spawn(up.data_dir, second_log, "--dev", *other_ports)
        stdout, _ = await asyncio.wait_for(second.communicate(), 30)
        assert (second.returncode, stdout) == (1, b"")
        assert "in use by another" in second_log.read_text()

        assert await up.terminate() == 0
        _, alive = await asyncio.to_thread(psutil.wait_procs, children, 5)
        assert alive == []
        assert await up.next_line() == ""  # nothing but the READY line on stdout
    lines = up.log_lines()
    stopped = [line for line in lines if line["msg"] == "supervisor stopped"]
    # 3 embedded servers, 4 HTTP processes and the order worker
    assert [(s["children"], s["killed"]) for s in stopped] == [(8, 0)]
    # Not a terminal: the children's JSON lines come on our stderr, as they always did, and
    # nothing is written for a console. Five uvicorns: the order worker serves its port too.
    assert [line["msg"] for line in lines].count("Application startup complete.") == 5
    assert not (up.data_dir / "logs" / "queue_server.log").exists()


async def test_up_restarts_a_killed_app_and_a_killed_valkey(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    async with flashsale_up(tmp_path, embedded_data_dir) as up:
        assert up.ready_line.startswith("READY ")
        queue = _child(up, _is_app("queue_server"))
        valkey = _child(up, _is_valkey)
        valkey_port = next(
            c.laddr.port for c in valkey.net_connections("tcp") if c.status == psutil.CONN_LISTEN
        )
        password = (up.data_dir / "valkey" / "password").read_text().strip()
        queue.kill()
        valkey.kill()

        client = Redis.from_url(f"redis://:{password}@127.0.0.1:{valkey_port}/0")

        async def valkey_back() -> bool:
            try:
                return bool(await client.ping())
            except RedisError:
                return False

        try:
            await _eventually(valkey_back)
        finally:
            await client.aclose()
        await _eventually(lambda: _healthy(up.url("queue")))
        assert _child(up, _is_app("queue_server")).pid != queue.pid
        assert _child(up, _is_valkey).pid != valkey.pid
        for app in APPS:
            await _eventually(lambda app=app: _healthy(up.url(app)))  # type: ignore[misc]
        assert await up.terminate() == 0
    restarted = {
        (line["child"], line["exit_code"])
        for line in up.log_lines()
        if line["msg"] == "child exited, restarting"
    }
    assert {("queue_server", -9), ("valkey", -9)} <= restarted


def _chatter(lines: list[dict[str, object]]) -> list[dict[str, object]]:
    """INFO lines of the libraries that log on every tick, poll and migration step."""
    return [
        line
        for line in lines
        if str(line.get("logger")).split(".")[0] in ("apscheduler", "aiokafka", "alembic")
        and line.get("level") in ("debug", "info")
    ]


async def test_demo_creates_a_sale_and_reopens_it_on_the_next_run(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    # The second run finds the product (409) and reopens it; that run then opens the sale,
    # whose start can no longer move, so the third run's demo is a fresh one under a new id.
    for run, demo_id in enumerate(("demo-sneaker", "demo-sneaker", "demo-sneaker-2")):
        async with flashsale_up(tmp_path, embedded_data_dir, "--demo") as up:
            assert up.ready_line.startswith("READY ")
            demo = f"Demo sale: {up.url('queue')}/wait/{demo_id} opens in 20 s"
            assert await up.next_line() == demo
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
                product = (await client.get(f"{up.url('gate')}/products/{demo_id}")).json()
                assert product["name"] == "Demo Sneaker"
                assert product["stock_left"] == 50
                assert product["state"] == "prequeue"
                if run == 1:
                    opened = await client.patch(
                        f"{up.url('shop')}/admin/products/demo-sneaker",
                        json={"sale_start": "2020-01-01T00:00:00Z"},
                        headers={"Authorization": "Bearer dev-admin-key"},
                    )
                    assert opened.status_code == 200, opened.text
            # A live sale: the scheduler's job runs every second, and none of its runs is
            # an INFO line at the default level (test_json_logs_at_debug sees them).
            await asyncio.sleep(2)
            assert await up.terminate() == 0
        assert _chatter(up.log_lines()) == []


async def test_json_logs_at_debug_carry_the_chatty_libraries(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    args = ("--demo", "--log-format", "json", "--log-level", "debug")
    async with flashsale_up(tmp_path, embedded_data_dir, *args) as up:
        # READY stays the first line on stdout, whatever the log format says.
        assert up.ready_line == (
            f"READY gate={up.url('gate')} queue={up.url('queue')} shop={up.url('shop')}"
        )
        assert (await up.next_line()).startswith("Demo sale: ")

        async def scheduler_chatter() -> bool:
            return any(
                str(line["logger"]).startswith("apscheduler") for line in _chatter(up.log_lines())
            )

        await _eventually(scheduler_chatter, timeout_s=30)
        assert await up.terminate() == 0
        assert await up.next_line() == ""  # and nothing else on stdout
    loggers = {str(line["logger"]).split(".")[0] for line in _chatter(up.log_lines())}
    assert {"apscheduler", "alembic"} <= loggers
    assert not (up.data_dir / "logs" / "scheduler.log").exists()  # JSON mode: all on stderr


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({}, "FLASHSALE_SECRET_KEYS"),
        ({"FLASHSALE_SECRET_KEYS": "s" * 32}, "FLASHSALE_ADMIN_KEY"),
    ],
)
async def test_up_refuses_default_keys_outside_dev_mode(
    tmp_path: Path, env: dict[str, str], complaint: str
) -> None:
    stderr_path = tmp_path / "up.stderr"
    proc = await _spawn(tmp_path / "data", stderr_path, **env)
    stdout, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert stdout == b""
    assert complaint in stderr_path.read_text()
    assert not (tmp_path / "data").exists()  # nothing was started


async def test_up_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        log = tmp_path / "up.stderr"
        proc = await _spawn(tmp_path / "data", log, "--dev", "--gate-port", str(port))
        stdout, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert (proc.returncode, stdout) == (1, b"")
    assert f"{port} (token_gate)" in log.read_text()
