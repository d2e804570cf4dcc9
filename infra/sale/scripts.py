"""The sale's Lua rules, as one Valkey function library.

Every sale decision is one file in ``infra/sale/lua``. ``lib.lua`` holds the helpers they share
(state, allowance, admit, release), so a rule is written once. The files are assembled into
one library (``FUNCTION LOAD``): Valkey runs the library's chunk once, when it loads it, and
each call (``FCALL``) only runs its own function. Sent as scripts (EVALSHA), every call had
first re-created the library's ~20 closures: about 6 µs of Valkey's CPU per call, a seventh of
a status. A library is also kept in Valkey's data (AOF, replicas), where the script cache is
lost on every restart.

The library and its functions are named after a digest of the sources
(``flashsale_<digest>``, ``fs_<digest>_status``), so processes of two releases can share one
Valkey during a rolling upgrade, each calling its own rules.

Every call goes through the client's :class:`~infra.autopipeline.AutoPipeline` as one FCALL:
the calls of concurrent requests share a pipeline, and a call is still one round trip for its
caller.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from infra.autopipeline import AutoPipeline
from infra.constants import JOIN_BURST_FACTOR
from infra.sale.keys import SaleKeys

SCRIPT_NAMES = (
    "join",
    "status",
    "leave",
    "admit",
    "open",
    "draw",
    "info",
    "config",
    "order",
    "release",
    "stored",
    "ratelimit",
    "complete",
)


def _read(name: str) -> str:
    return (resources.files("infra.sale") / "lua" / f"{name}.lua").read_text()


@cache
def digest() -> str:
    """Names this release's library: a digest of every source it is built from."""
    h = hashlib.sha1()
    for name in ("lib", *SCRIPT_NAMES):
        h.update(_read(name).encode())
    return h.hexdigest()[:12]


def function_name(name: str) -> str:
    return f"fs_{digest()}_{name}"


@cache
def library() -> str:
    """The library's code: lib.lua, then each rule as a function of (KEYS, ARGV), whose body is
    the file as written; its first act is to bind the helpers to its keys."""
    parts = [f"#!lua name=flashsale_{digest()}", _read("lib")]
    for name in SCRIPT_NAMES:
        parts.append(
            f"redis.register_function('{function_name(name)}', function(KEYS, ARGV)\n"
            f"bind(KEYS)\n{_read(name)}\nend)"
        )
    return "\n".join(parts) + "\n"


async def load_library(redis: Redis | RedisCluster) -> None:
    """Loads (or replaces) this release's library; idempotent."""
    await redis.function_load(library(), replace=True)


def _missing_function(exc: ResponseError) -> bool:
    # Valkey's words when the library is not loaded (a new server, FUNCTION FLUSH).
    return "function not found" in str(exc).lower()


class SaleScripts:
    def __init__(self, redis: Redis, pipeline: AutoPipeline | None = None) -> None:
        self._redis = redis
        self._names = {name: function_name(name) for name in SCRIPT_NAMES}
        self.pipeline = pipeline if pipeline is not None else AutoPipeline(redis)

    async def _fcall(
        self, name: str, keys: list[str], args: list[Any], durable: bool = False
    ) -> Any:
        command = ("FCALL", self._names[name], len(keys), *keys, *args)
        try:
            return await self.pipeline.execute(*command, durable=durable)
        except ResponseError as exc:
            if not _missing_function(exc):
                raise
            # Not loaded on this server yet: load it and call again. The retried call goes
            # after whatever was queued meanwhile; every rule reads the state it acts on, so a
            # late call decides on what it finds.
            await load_library(self._redis)
            return await self.pipeline.execute(*command, durable=durable)

    async def run(
        self,
        name: str,
        keys: SaleKeys,
        extra_keys: list[str] | None = None,
        args: list[Any] = (),
        durable: bool = False,
    ) -> Any:
        """One rule for one sale. ``durable``: see :meth:`AutoPipeline.execute`."""
        return await self._fcall(name, [*keys.base, *(extra_keys or ())], list(args), durable)

    async def join(
        self,
        keys: SaleKeys,
        visitor_id: str,
        holds_ticket: bool,
        client_ip: str,
        rate_per_s: float,
    ) -> list[Any]:
        return await self.run(
            "join",
            keys,
            [keys.join_rate(client_ip)],
            [visitor_id, int(holds_ticket), rate_per_s, rate_per_s * JOIN_BURST_FACTOR],
        )

    async def status(self, keys: SaleKeys, visitor_id: str) -> list[Any]:
        return await self.run("status", keys, args=[visitor_id])

    async def leave(self, keys: SaleKeys, visitor_id: str) -> str:
        return await self.run("leave", keys, args=[visitor_id])

    async def info(self, keys: SaleKeys) -> dict[str, str]:
        flat = await self.run("info", keys)
        return {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}

    async def take_token(self, bucket: str, rate_per_s: float, burst: float) -> list[int]:
        """One token from the bucket at `bucket` (ratelimit.lua): {allowed, left, retry ms}.

        Not a sale script: its only key is the bucket, so it skips `run`'s nine sale keys.
        """
        reply = await self._fcall("ratelimit", [bucket], [rate_per_s, burst])
        return [int(part) for part in reply]
