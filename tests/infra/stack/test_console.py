"""`flashsale up` on a terminal (a real pseudo-terminal): the live console instead of JSON
lines, one full log file per process under <data-dir>/logs/, the chatty libraries held at
WARNING unless --log-level debug, a crash shown as a warning and a restart."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import shutil
import signal
import struct
import sys
import tempfile
import termios
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psutil
import pytest

from infra.stack.console import LogTail, classify
from infra.stack.embedded import free_port

APPS = ("gate", "queue", "shop", "scheduler", "worker")
PROCESSES = (
    "valkey",
    "postgres",
    "tansu",
    "queue_server",
    "scheduler",
    "shop",
    "token_gate",
    "shop.worker",
)
ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|[()][0-9A-Za-z]|[=>])")
COLUMNS, LINES = 140, 60
DEMO_ROW = r"demo-sneaker\s+(prequeue|open)\s+\d"


@dataclass
class Screen:
    """What a person at the terminal sees, as text (escape codes removed)."""

    proc: asyncio.subprocess.Process
    primary: int
    data_dir: Path
    ports: dict[str, int]
    raw: bytearray = field(default_factory=bytearray)
    _reader: threading.Thread | None = None

    def start_reading(self) -> None:
        def read() -> None:
            while True:
                try:
                    chunk = os.read(self.primary, 65536)
                except OSError:  # EIO: every writer of the terminal has gone
                    return
                if not chunk:
                    return
                self.raw += chunk

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def finish_reading(self, timeout_s: float = 10.0) -> str:
        """Everything the terminal got, once flashsale up has exited."""
        assert self._reader is not None
        self._reader.join(timeout_s)
        return self.text()

    def text(self, since: int = 0) -> str:
        return ANSI.sub("", bytes(self.raw[since:]).decode(errors="replace"))

    async def wait_for(self, pattern: str, timeout_s: float = 60.0, since: int = 0) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not re.search(pattern, text := self.text(since)):
            if loop.time() > deadline:
                raise AssertionError(f"{pattern!r} never showed; the screen ends:\n{text[-3000:]}")
            if self.proc.returncode is not None:
                raise AssertionError(f"flashsale up exited ({self.proc.returncode}):\n{text}")
            await asyncio.sleep(0.2)
        return text

    def url(self, app: str) -> str:
        return f"http://127.0.0.1:{self.ports[app]}"

    def log(self, name: str) -> Path:
        return self.data_dir / "logs" / f"{name}.log"

    def json_lines(self, name: str) -> list[dict[str, object]]:
        lines = []
        for raw in self.log(name).read_bytes().splitlines():
            record = orjson.loads(raw)  # every line of our processes' logs is JSON
            assert isinstance(record, dict)
            lines.append(record)
        return lines


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    env.update(TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(LINES))
    return env


@asynccontextmanager
async def console_up(data_dir: Path, *args: str) -> AsyncIterator[Screen]:
    ports = {app: free_port() for app in APPS}
    port_args = [x for app in APPS for x in (f"--{app}-port", str(ports[app]))]
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    try:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "infra", "up", "--data-dir", str(data_dir)),
            *("--dev", *port_args, *args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=secondary,
            stderr=secondary,
            env=_env(),
        )
    finally:
        os.close(secondary)
    screen = Screen(proc, primary, data_dir, ports)
    screen.start_reading()
    try:
        await screen.wait_for(r"READY gate=\S+ queue=\S+ shop=\S+", timeout_s=120)
        yield screen
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        os.close(primary)


@pytest.fixture(scope="module")
def _data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="flashsale-test-console-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
async def screen(_data_dir: Path) -> AsyncIterator[Screen]:
    """One `flashsale up --demo` on a terminal for the module, at the default log level."""
    async with console_up(_data_dir, "--demo") as up:
        await up.wait_for(DEMO_ROW)  # the demo's figures are on screen
        yield up


@pytest.mark.slow
async def test_the_console_shows_urls_processes_and_the_demo_figures(screen: Screen) -> None:
    text = await screen.wait_for(r"flashsale up · ready")
    assert re.search(rf"waiting room\s+{screen.url('queue')}/wait/demo-sneaker", text)
    for app in ("gate", "queue", "shop"):
        assert re.search(rf"│ {app}\s+{screen.url(app)}", text), app
    text = await screen.wait_for(r"shop\.worker\s+up\s+\d+\s+0\s")
    for name in PROCESSES:
        assert re.search(rf"\b{re.escape(name)}\s+up\s+\d+\s+0\s+–", text), name
    # sale, state, waiting, admitted, stock left, orders pending, placed, paid, cancelled
    assert re.search(r"demo-sneaker\s+prequeue\s+0\s+0\s+50 / 50\s+0\s+0\s+0\s+0\s", text)
    assert f"logs          {screen.data_dir}/logs/" in text
    # The console, not the chatter: no JSON log line reaches the terminal.
    assert '{"ts"' not in text
    assert '"level"' not in text
    assert "Application startup complete" not in text


@pytest.mark.slow
async def test_every_process_logs_in_full_to_its_own_file(screen: Screen) -> None:
    await screen.wait_for(r"flashsale up · ready")
    for name in ("queue_server", "scheduler", "shop", "token_gate"):
        messages = [line["msg"] for line in screen.json_lines(name)]
        assert "Application startup complete." in messages, name  # INFO: the full log
    assert screen.log("shop.worker").stat().st_size > 0
    assert screen.log("shop.migrate").exists()
    own = [line["msg"] for line in screen.json_lines("flashsale")]
    assert own.count("child started") == len(PROCESSES)
    assert "Ready to accept connections" in screen.log("valkey").read_text()
    assert screen.log("postgres").stat().st_size > 0
    assert screen.log("tansu").exists()


@pytest.mark.slow
async def test_the_chatty_libraries_stay_quiet_at_the_default_level(screen: Screen) -> None:
    await screen.wait_for(r"flashsale up · ready")
    # The demo sale is live, so APScheduler runs its job every second: a few seconds are
    # many runs (test_debug_lets_the_chatty_libraries_through sees them at debug).
    await asyncio.sleep(3)
    for name in ("queue_server", "scheduler", "shop", "token_gate", "shop.worker", "shop.migrate"):
        chatter = [
            line
            for line in screen.json_lines(name)
            if str(line["logger"]).split(".")[0] in ("apscheduler", "aiokafka", "alembic")
            and line["level"] in ("debug", "info")
        ]
        assert chatter == [], name


@pytest.mark.slow
async def test_a_crash_shows_as_a_warning_and_a_restart(screen: Screen) -> None:
    await screen.wait_for(r"flashsale up · ready")
    since = len(screen.raw)
    up = psutil.Process(screen.proc.pid)
    [queue] = [p for p in up.children() if p.cmdline()[-2:] == ["-m", "queue_server"]]
    queue.kill()
    text = await screen.wait_for(
        r"flashsale\s+warn\s+child exited, restarting \(child=queue_server, exit_code=-9",
        since=since,
    )
    assert "warnings and errors" in text
    await screen.wait_for(r"queue_server\s+up\s+\d+\s+1\s+-9", since=since)


@pytest.mark.slow
async def test_debug_lets_the_chatty_libraries_through_and_ctrl_c_stops(
    embedded_data_dir: Path,
) -> None:
    async with console_up(embedded_data_dir, "--demo", "--log-level", "debug") as up:
        await up.wait_for(DEMO_ROW)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30

        def apscheduler_runs() -> list[dict[str, object]]:
            return [
                line
                for line in up.json_lines("scheduler")
                if str(line["logger"]).startswith("apscheduler") and line["level"] == "info"
            ]

        while not apscheduler_runs():
            assert loop.time() < deadline, "no APScheduler INFO line at --log-level debug"
            await asyncio.sleep(0.2)
        alembic = [
            m for m in up.json_lines("shop.migrate") if str(m["logger"]).startswith("alembic")
        ]
        assert alembic, "no alembic line at --log-level debug"
        assert '{"ts"' not in up.text()  # still a console, however much the files hold

        children = psutil.Process(up.proc.pid).children(recursive=True)
        up.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert await asyncio.wait_for(up.proc.wait(), 30) == 0
        _, alive = await asyncio.to_thread(psutil.wait_procs, children, 5)
        assert alive == []
        last_frame = up.finish_reading().split("flashsale up · stopped")[-1]
        for name in PROCESSES:
            assert re.search(rf"\b{re.escape(name)}\s+stopped\s+–", last_frame), name


def test_classify_keeps_warnings_and_errors_of_every_format() -> None:
    json_warning = (
        '{"ts":"t","level":"warning","logger":"flashsale.supervisor",'
        '"msg":"child exited, restarting","child":"shop","exit_code":1,"restart_in_s":0.5}'
    )
    assert classify(json_warning) == (
        30,
        "child exited, restarting (child=shop, exit_code=1, restart_in_s=0.5)",
    )
    json_error = (
        '{"level":"error","logger":"x","msg":"boom\\nsecond line","exc":"T\\nValueError: v"}'
    )
    assert classify(json_error) == (40, "boom second line | ValueError: v")
    assert classify('{"level":"info","logger":"apscheduler","msg":"Running job"}') is None
    valkey = "13780:M 01 Dec 2026 18:58:30.848 # WARNING Memory overcommit must be enabled!"
    assert classify(valkey) == (30, valkey)
    assert classify("2026-12-01 18:58:31 UTC [12] FATAL:  the database system is starting up")
    assert classify("\x1b[2m2026\x1b[0m \x1b[33m WARN\x1b[0m tansu: slow") == (
        30,
        "2026 WARN tansu: slow",
    )
    assert classify("13780:M 01 Dec 2026 * Ready to accept connections tcp") is None
    assert classify("") is None


def test_the_log_tail_reports_only_new_lines_and_waits_for_whole_ones(tmp_path: Path) -> None:
    old = tmp_path / "shop.log"
    old.write_text('{"level":"error","msg":"from an earlier run"}\n')
    (tmp_path / "flashsale.log").write_text("")
    tail = LogTail(tmp_path)
    assert tail.poll() == []  # history is not news
    with old.open("a") as f:
        f.write('{"level":"error","msg":"now"}\n{"level":"warning","msg":"half')
    (tmp_path / "flashsale.log").write_text('{"level":"error","msg":"own: via the handler"}\n')
    (tmp_path / "valkey.log").write_text("1:M # WARNING new file\n")
    assert [(e.source, e.text) for e in tail.poll()] == [
        ("shop", "now"),
        ("valkey", "1:M # WARNING new file"),
    ]
    with old.open("a") as f:
        f.write(' a line"}\n')
    assert [(e.source, e.level, e.text) for e in tail.poll()] == [("shop", 30, "half a line")]
