"""tests.queue_server.test_queue_api, run on the Redis Cluster (see conftest.py)."""

from tests.queue_server.conftest import *  # noqa: F403 (its fixtures, for the imported tests)
from tests.queue_server.test_queue_api import *  # noqa: F403
