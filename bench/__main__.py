"""`python -m bench`: what `flashsale bench` runs (see bench/suite.py)."""

import sys

from bench.suite import main

sys.exit(main())
