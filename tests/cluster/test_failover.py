"""A master fails over mid-sale (``CLUSTER FAILOVER`` on its replica): no visitor that was
told it has a place loses it, nobody holds two, and the line keeps its order."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from infra.sale.keys import sale_keys
from infra.sale.scripts import SaleScripts
from shop.sales import create_sale
from token_gate.codec import new_visitor_id

FAILOVER_TIMEOUT_S = 30.0


async def _replica_of(cluster: RedisCluster, key: str) -> tuple[str, int]:
    await cluster.initialize()
    master = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key))
    nodes = await cluster.cluster_nodes()
    master_id = nodes[master.name]["node_id"]
    for address, node in nodes.items():
        if node["master_id"] == master_id and "slave" in node["flags"]:
            host, port = address.rsplit(":", 1)
            return host, int(port)
    raise AssertionError(f"{master.name} has no replica")


async def test_a_master_failing_over_mid_sale_loses_no_place(
    cluster: RedisCluster, cluster_url: str
) -> None:
    scripts = SaleScripts(cluster)  # type: ignore[arg-type]
    product = f"fo-{secrets.token_hex(4)}"
    start = datetime.fromtimestamp(time.time() + 600, tz=UTC).isoformat()
    body = {"id": product, "name": "Failover", "price": 100, "currency": "EUR", "stock": 10}
    body |= {"sale_start": start, "queue_mode": "fifo"}
    keys = await create_sale(cluster, scripts, body)  # type: ignore[arg-type]
    host, port = await _replica_of(cluster, keys.sale)
    replica = Redis(host=host, port=port, password=urlsplit(cluster_url).password)
    placed: list[str] = []
    failed: list[str] = []
    stop = asyncio.Event()

    async def joiner() -> None:
        while not stop.is_set():
            visitor = new_visitor_id()
            try:
                reply = await scripts.join(keys, visitor, False, "10.0.0.1", 0)
            except Exception:
                failed.append(visitor)  # the client would retry: a new place for it
                await asyncio.sleep(0.05)
                continue
            assert reply[0] == "ok" and reply[1] == "not_started", reply
            placed.append(visitor)

    joiners = [asyncio.create_task(joiner()) for _ in range(8)]
    try:
        await asyncio.sleep(0.5)
        before = len(placed)
        assert await replica.execute_command("CLUSTER FAILOVER")
        deadline = time.monotonic() + FAILOVER_TIMEOUT_S
        while (await replica.info("replication"))["role"] != "master":
            assert time.monotonic() < deadline, "the replica never took over"
            await asyncio.sleep(0.1)
        promoted_at = len(placed)
        await asyncio.sleep(1.0)
        assert len(placed) > promoted_at > before  # joins went on, through the new master
    finally:
        stop.set()
        await asyncio.gather(*joiners)
        await replica.aclose()
    line = await cluster.zrange(keys.line, 0, -1)
    assert set(placed) <= set(line)  # every place a visitor was told of survived
    assert set(line) <= set(placed) | set(failed)  # nothing appeared that nobody asked for
    # FIFO: the places that were confirmed keep the order of their confirmations.
    rank = {v: i for i, v in enumerate(line)}
    assert sorted(placed, key=rank.__getitem__) == placed
    assert int(await cluster.get(keys.seq)) >= len(line)
    assert sale_keys(product).line == keys.line
