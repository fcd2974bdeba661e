"""The end-to-end fixtures, for the reliability tests: one real server
process per backend for the session, and fresh databases."""

from tests.e2e.conftest import (
    backend,
    channel,
    live_server,
    make_database_url,
    server,
    stub,
)

__all__ = ["backend", "channel", "live_server", "make_database_url", "server", "stub"]
