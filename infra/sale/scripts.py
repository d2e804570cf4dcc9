"""The sale's Lua scripts, loaded once per Redis client.

Every sale decision is one script in ``infra/sale/lua``. ``lib.lua`` holds the helpers they share
(state, allowance, admit, release) and is prepended to each, so a rule is written once.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from infra.constants import JOIN_BURST_FACTOR
from infra.sale.keys import SaleKeys

SCRIPT_NAMES = (
    "join",
    "status",
    "leave",
    "admit",
    "open",
    "info",
    "config",
    "order",
    "release",
    "stored",
    "ratelimit",
    "complete",
)


@cache
def source(name: str) -> str:
    lua = resources.files("infra.sale") / "lua"
    return (lua / "lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class SaleScripts:
    def __init__(self, redis: Redis) -> None:
        self._scripts = {name: redis.register_script(source(name)) for name in SCRIPT_NAMES}

    async def run(
        self, name: str, keys: SaleKeys, extra_keys: list[str] | None = None, args: list[Any] = ()
    ) -> Any:
        return await self._scripts[name](keys=[*keys.base, *(extra_keys or ())], args=list(args))

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
        reply = await self._scripts["ratelimit"](keys=[bucket], args=[rate_per_s, burst])
        return [int(part) for part in reply]
