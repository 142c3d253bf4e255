"""Hypothesis profiles for the fuzz tests, and the atheris harness kept out of collection.

``ci`` (the default): a bounded, derandomised run, so the whole folder takes well under a
minute and a failure reproduces on the next run. ``long``: ``make fuzz`` (or
``HYPOTHESIS_PROFILE=long``), many more examples, random, with the example database on, so a
crash found there is replayed first next time (then kept as an ``@example``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=5_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The coverage-guided harnesses (atheris) are run by `make fuzz`, never collected as tests.
collect_ignore = ["atheris_targets.py"]
