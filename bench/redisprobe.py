"""What the bench reads from Valkey itself: memory, commandstats, and the commands clients send.

INFO commandstats counts every command Valkey runs, including each command a Lua script runs
inside its EVALSHA (checked: one EVALSHA of a three-command script adds four calls). A "Redis
call" of the targets is a command a *client* sends, so a script must count once. MONITOR tells
the two apart (a script's inner commands are tagged ``lua``), so :class:`ClientCommands`
counts the client-sent commands from MONITOR, while the commandstats delta of the same window
is kept next to it as the breakdown of what those calls did inside Valkey.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from types import TracebackType

from redis.asyncio import Redis

from infra.sale.scripts import SCRIPT_NAMES, function_name, load_library

PROBE_NAME = "flashsale-bench-probe"


def _script_names() -> dict[str, str]:
    """The library's function name -> the rule's name."""
    return {function_name(n): n for n in SCRIPT_NAMES}


# Per connection, not per operation: a pool that opens a connection during the window sends
# these once. They are left out of the per-operation counts (and listed in the breakdown).
HANDSHAKE = frozenset({"AUTH", "HELLO", "SELECT", "CLIENT"})


async def probe_client(url: str) -> Redis:
    """The bench's own connection, named so that its commands are never counted."""
    redis = Redis.from_url(url, decode_responses=True, single_connection_client=True)
    await redis.client_setname(PROBE_NAME)
    return redis


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def commandstats(redis: Redis) -> Counter[str]:
    stats = await redis.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


async def wait_quiet(redis: Redis, quiet_s: float = 0.3, timeout_s: float = 10.0) -> None:
    """Returns once Valkey ran no command but our INFO for ``quiet_s``: requests a load
    generator left in flight are done, and cannot be counted as the next window's."""
    deadline = time.monotonic() + timeout_s
    last = await commandstats(redis)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = await commandstats(redis)
        moved = now - last
        moved.pop("info", None)
        if not moved:
            return
        last = now


async def preload_scripts(redis: Redis) -> None:
    """The sale's function library in Valkey, as in a platform that has been running: the
    first FCALL on a fresh server fails ("function not found") and costs a FUNCTION LOAD."""
    await load_library(redis)


class ClientCommands:
    """``async with ClientCommands(url, probe) as seen: <operations>`` then ``seen.counts``:
    commands sent by clients other than the probe during the block, by name, plus
    ``seen.inner`` (commands scripts ran) and ``seen.stats`` (the commandstats delta)."""

    def __init__(self, url: str, probe: Redis) -> None:
        self._monitor_client = Redis.from_url(url, decode_responses=True)
        self._probe = probe
        self.counts: Counter[str] = Counter()
        self.handshake: Counter[str] = Counter()
        self.inner = 0
        self.stats: Counter[str] = Counter()
        self._end = f"bench-end-{secrets.token_hex(6)}"
        self._task: asyncio.Task[None] | None = None
        self._probe_addr = ""
        self._before: Counter[str] = Counter()
        self._scripts = _script_names()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    async def __aenter__(self) -> ClientCommands:
        await wait_quiet(self._probe)
        self._probe_addr = (await self._probe.client_info())["addr"]
        self._monitor = self._monitor_client.monitor()
        await self._monitor.__aenter__()
        self._task = asyncio.create_task(self._read())
        self._before = await commandstats(self._probe)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        try:
            after = await commandstats(self._probe)
            self.stats = after - self._before
            # MONITOR delivers in execution order: once the marker is seen, all is counted.
            await self._probe.echo(self._end)
            if exc_type is None:
                await asyncio.wait_for(self._task, 60)
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            with contextlib.suppress(Exception):
                await self._monitor.__aexit__(None, None, None)
            await self._monitor_client.aclose()
        # The probe's own INFO calls are in the delta too; they are not the platform's.
        self.stats["info"] -= 1
        self.stats = +self.stats

    async def _read(self) -> None:
        while True:
            cmd = await self._monitor.next_command()
            if cmd["client_type"] == "lua":
                self.inner += 1
                continue
            parts = cmd["command"].split(" ", 2)
            name = parts[0].upper()
            if name == "FCALL" and len(parts) > 1:
                # Which rule: the breakdown then reads "FCALL join", "FCALL admit".
                fn = parts[1].strip('"')
                name = f"FCALL {self._scripts.get(fn, fn)}"
            if f"{cmd['client_address']}:{cmd['client_port']}" == self._probe_addr:
                if name == "ECHO" and self._end in cmd["command"]:
                    return
                continue
            if name in HANDSHAKE:
                self.handshake[name] += 1
            else:
                self.counts[name] += 1
