"""A whole drop through `flashsale up`'s real processes: line, admission, token, order, pay,
cancel, as a visitor and an operator see them over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from infra.constants import DEV_ADMIN_KEY, DEV_SECRET_KEY
from tests.infra.stack.test_up import _eventually, flashsale_up
from token_gate.codec import TokenCodec

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}


async def test_a_visitor_waits_is_admitted_orders_pays_and_cancels(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    async with flashsale_up(tmp_path, embedded_data_dir) as up:
        queue, gate, shop = up.url("queue"), up.url("gate"), up.url("shop")
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
            created = await http.post(
                f"{shop}/admin/products",
                headers=ADMIN,
                json={
                    "id": "e2e-sneaker",
                    "name": "End-to-end sneaker",
                    "price": 9900,
                    "currency": "EUR",
                    "stock": 3,
                    "sale_start": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
                    "queue_mode": "shuffle_prequeue",
                    "batch_size": 2,
                    "interval_s": 0.5,
                    "per_user_limit": 1,
                },
            )
            assert created.status_code == 201, created.text
            # Three visitors join the pre-queue; the scheduler draws and admits them.
            tickets = []
            for _ in range(3):
                joined = await http.post(f"{queue}/queue/e2e-sneaker/join")
                assert joined.status_code == 201, joined.text
                assert joined.json()["state"] == "not_started"
                tickets.append(joined.json()["ticket"])
                http.cookies.clear()
            statuses: list[dict[str, object]] = []

            async def all_admitted() -> bool:
                statuses.clear()
                for ticket in tickets:
                    r = await http.get(
                        f"{queue}/queue/e2e-sneaker/status",
                        headers={"Authorization": f"Bearer {ticket}"},
                    )
                    http.cookies.clear()
                    statuses.append(r.json())
                return all(s["state"] == "admitted" for s in statuses)

            await _eventually(all_admitted, timeout_s=30)
            info = (await http.get(f"{queue}/queue/e2e-sneaker")).json()
            assert info["state"] == "open" and info["shuffle_seed"]
            codec = TokenCodec((DEV_SECRET_KEY,))
            tokens = [str(s["access_token"]) for s in statuses]
            assert all(codec.read_access(t).product_id == "e2e-sneaker" for t in tokens)

            # Through the gate: no token, no entry; with one, the order goes through Kafka.
            orders = f"{gate}/products/e2e-sneaker/orders"
            refused = await http.post(orders, json={"quantity": 1})
            assert (refused.status_code, refused.json()["error"]) == (401, "token_missing")
            bearer = [{"Authorization": f"Bearer {t}"} for t in tokens]
            placed = await http.post(
                orders, json={"quantity": 1}, headers={**bearer[0], "Idempotency-Key": "a-1"}
            )
            assert placed.status_code == 202, placed.text
            order = placed.json()
            assert (order["status"], order["unit_price"], order["total"]) == ("pending", 9900, 9900)
            mine = f"{orders}/{order['order_id']}"

            async def stored() -> bool:
                r = await http.get(mine, headers=bearer[0])
                return r.json()["status"] == "placed"

            await _eventually(stored, timeout_s=30)
            paid = await http.post(
                f"{mine}/pay", json={"card": "4242424242424242"}, headers=bearer[0]
            )
            assert (paid.status_code, paid.json()["status"]) == (200, "paid")
            again = await http.post(orders, json={"quantity": 1}, headers=bearer[0])
            assert (again.status_code, again.json()["error"]) == (409, "limit_reached")

            second = (await http.post(orders, json={"quantity": 1}, headers=bearer[1])).json()
            theirs = f"{orders}/{second['order_id']}"
            assert (await http.get(theirs, headers=bearer[0])).status_code == 404
            cancelled = await http.delete(theirs, headers=bearer[1])
            assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")

            product = (await http.get(f"{gate}/products/e2e-sneaker")).json()
            assert product["stock_left"] == 2  # 3 - 1 paid; the cancelled unit came back

            async def counted() -> bool:
                stats = (
                    await http.get(f"{shop}/admin/sales/e2e-sneaker/stats", headers=ADMIN)
                ).json()
                return stats["orders"] == {"pending": 0, "placed": 0, "paid": 1, "cancelled": 1}

            await _eventually(counted, timeout_s=30)
            stats = (await http.get(f"{shop}/admin/sales/e2e-sneaker/stats", headers=ADMIN)).json()
            assert (stats["admitted"], stats["stock_total"], stats["stock_left"]) == (3, 3, 2)
