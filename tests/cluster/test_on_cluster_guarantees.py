"""tests.orders.test_guarantees, run on the Redis Cluster (see conftest.py)."""

from tests.orders.conftest import *  # noqa: F403 (its fixtures, for the imported tests)
from tests.orders.test_guarantees import *  # noqa: F403
