"""tests.scheduler.test_scheduler, run on the Redis Cluster (see conftest.py)."""

from tests.scheduler.conftest import *  # noqa: F403 (its fixtures, for the imported tests)
from tests.scheduler.conftest import _only_this_tests_sales  # noqa: F401 (* skips _names)
from tests.scheduler.test_scheduler import *  # noqa: F403
