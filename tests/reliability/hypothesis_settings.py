"""What the Hypothesis-driven reliability tests (fuzz and model) share."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# Calls go to a real server: slow, and some inputs large by design.
AGAINST_A_SERVER = settings(
    deadline=None,
    # No .hypothesis directory in the repository; failures print their seed.
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
