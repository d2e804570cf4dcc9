"""The sale's Lua scripts, loaded once per Redis client.

Every sale decision is one script in ``infra/sale/lua``. ``lib.lua`` holds the helpers they share
(state, allowance, admit, release) and is prepended to each, so a rule is written once.

Every call goes through the client's :class:`~infra.autopipeline.AutoPipeline` as one EVALSHA:
the calls of concurrent requests share a pipeline, and a call is still one round trip for its
caller.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from infra.autopipeline import AutoPipeline
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
    def __init__(self, redis: Redis, pipeline: AutoPipeline | None = None) -> None:
        self._redis = redis
        self._scripts = {name: redis.register_script(source(name)) for name in SCRIPT_NAMES}
        self.pipeline = pipeline if pipeline is not None else AutoPipeline(redis)

    async def _evalsha(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts[name]
        try:
            return await self.pipeline.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis lost its script cache (a restart, SCRIPT FLUSH): load it and call again.
            # The retried call goes after whatever was queued meanwhile; every script reads
            # the state it acts on, so a late call decides on what it finds.
            await self._redis.script_load(script.script)
            return await self.pipeline.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    async def run(
        self, name: str, keys: SaleKeys, extra_keys: list[str] | None = None, args: list[Any] = ()
    ) -> Any:
        return await self._evalsha(name, [*keys.base, *(extra_keys or ())], list(args))

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
        reply = await self._evalsha("ratelimit", [bucket], [rate_per_s, burst])
        return [int(part) for part in reply]
