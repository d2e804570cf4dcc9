"""What every shop view reaches through ``request.app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.web.metrics import Metrics
from shop.compensation import Compensation
from shop.producer import EventProducer
from shop.reservations import Reservations


@dataclass
class ShopContext:
    settings: Settings
    redis: Redis
    scripts: SaleScripts
    engine: AsyncEngine
    metrics: Metrics
    reservations: Reservations
    producer: EventProducer
    compensation: Compensation


def shop_context(request: Request) -> ShopContext:
    return request.app.state.ctx
