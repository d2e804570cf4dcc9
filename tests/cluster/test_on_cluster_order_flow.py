"""tests.orders.test_order_flow, run on the Redis Cluster (see conftest.py)."""

from tests.orders.conftest import *  # noqa: F403 (its fixtures, for the imported tests)
from tests.orders.test_order_flow import *  # noqa: F403
