"""A pytest plugin that runs the OpenAI Agents SDK's own session tests
(tests/integrations/upstream.py fetches them) on `AgentStateSession`.

Loaded by name (``-p agent_state_upstream_plugin``) in a pytest of its own
whose root is the unpacked upstream tree, so it imports nothing of this
repository's `tests` package (the upstream tree has its own). The server
is at the address in AGENT_STATE_UPSTREAM_ADDRESS.

Where an upstream test builds the SDK's store (``SQLiteSession(...)``,
``AsyncSQLiteSession(...)``, ``SQLAlchemySession(...)`` or its
``from_url``), it gets an `AgentStateSession` instead: the test module's
name is bound to a class of the same constructor. Two stores the SDK keeps
apart (two database files, two in-memory databases, two tests) are two
namespaces here; one file shared by two stores is one namespace, as the
SDK's stores share it. Each test reports how many of our sessions it
built; the outcomes, those counts and the deselected tests go to the JSON
file named by AGENT_STATE_UPSTREAM_REPORT.

`NOT_APPLICABLE` lists the upstream tests that check a store's own
internals rather than the Session behaviour; they are deselected, each
with its reason, and our suite tests the behaviour they stand for
(tests/integrations/test_openai_agents_session.py).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_state_client import AsyncClient
from agent_state_client.integrations.openai_agents import AgentStateSession

ADDRESS_VARIABLE = "AGENT_STATE_UPSTREAM_ADDRESS"
REPORT_VARIABLE = "AGENT_STATE_UPSTREAM_REPORT"

_SQLITE_INTERNALS = "reads or breaks the SQLite file, its connections or locks directly"
_SQLALCHEMY_INTERNALS = "reads the SQLAlchemy engine, its tables or its SQL directly"
_CLOSED = "a closed store; AgentStateSession has nothing to close (the client is the caller's)"
_VACUOUS = "checks SQLite locking or the engine attribute, which our session does not use"
_PRUNED_PREFIX = (
    "EncryptedSession's TTL pruning inside the compaction write (prune_prefix): "
    "AgentStateSession serves no suffix snapshot then, so automatic compaction stands down"
)

# file -> test function -> why it cannot take our session.
NOT_APPLICABLE: dict[str, dict[str, str]] = {
    "tests/memory/test_session.py": {
        "test_sqlite_session_close_closes_worker_thread_connections": _SQLITE_INTERNALS,
        "test_sqlite_session_reaps_connections_from_exited_worker_threads": _SQLITE_INTERNALS,
        "test_sqlite_session_closes_retired_connections_before_the_next_allocation": (
            _SQLITE_INTERNALS
        ),
        "test_sqlite_session_keeps_connections_of_live_worker_threads": _SQLITE_INTERNALS,
        "test_sqlite_session_closed_rejects_empty_add_items": _CLOSED,
        "test_sqlite_session_pop_item_skips_corrupt_most_recent": _SQLITE_INTERNALS,
        "test_sqlite_session_pop_item_returns_none_after_dropping_only_corrupt_rows": (
            _SQLITE_INTERNALS
        ),
        "test_sqlite_session_get_items_limit_skips_corrupt_newest_rows": _SQLITE_INTERNALS,
        "test_sqlite_session_get_items_session_settings_limit_skips_corrupt_rows": (
            _SQLITE_INTERNALS
        ),
        "test_sqlite_session_file_lock_is_shared_across_instances": _SQLITE_INTERNALS,
        "test_sqlite_session_failed_add_items_releases_write_lock": _SQLITE_INTERNALS,
        "test_sqlite_session_failed_clear_session_rolls_back": _SQLITE_INTERNALS,
        "test_sqlite_session_failed_pop_item_releases_write_lock": _SQLITE_INTERNALS,
        "test_sqlite_session_rollback_failure_evicts_connection": _SQLITE_INTERNALS,
        "test_sqlite_session_close_retries_quarantined_connection": _SQLITE_INTERNALS,
        "test_sqlite_session_post_commit_cancellation_propagates_after_known_outcome": (
            _SQLITE_INTERNALS
        ),
    },
    "tests/extensions/memory/test_sqlalchemy_session.py": {
        "test_sqlalchemy_session_defaults_to_escaped_non_ascii_storage": _SQLALCHEMY_INTERNALS,
        "test_sqlalchemy_session_can_store_non_ascii_without_escaping": _SQLALCHEMY_INTERNALS,
        "test_sqlite_fallback_reserves_writer_before_tail_claim": _SQLALCHEMY_INTERNALS,
        "test_pop_item_supports_unknown_delete_rowcount": _SQLALCHEMY_INTERNALS,
        "test_pop_item_retries_returning_claim_lost_to_concurrent_delete": _SQLALCHEMY_INTERNALS,
        "test_mutation_cancellation_waits_for_transaction_exit": _SQLALCHEMY_INTERNALS,
        "test_pop_item_skips_corrupt_most_recent": _SQLALCHEMY_INTERNALS,
        "test_get_items_limit_skips_corrupt_newest_rows": _SQLALCHEMY_INTERNALS,
        "test_pop_item_returns_none_after_dropping_only_corrupt_rows": _SQLALCHEMY_INTERNALS,
        "test_add_items_waits_for_transient_sqlite_write_lock": _VACUOUS,
        "test_add_items_cancelled_waiter_does_not_strand_table_init_lock": _SQLALCHEMY_INTERNALS,
        "test_create_tables_false_does_not_allocate_shared_init_lock": _SQLALCHEMY_INTERNALS,
        "test_get_items_same_timestamp_consistent_order": _SQLALCHEMY_INTERNALS,
        "test_pop_item_same_timestamp_returns_latest": _SQLALCHEMY_INTERNALS,
        "test_get_items_orders_by_id_for_ties": _SQLALCHEMY_INTERNALS,
        "test_engine_property_from_url": _VACUOUS,
        "test_engine_property_from_external_engine": _VACUOUS,
        "test_engine_property_is_read_only": _SQLALCHEMY_INTERNALS,
        "test_sqlite_configuration_registry_releases_collected_engines": _SQLALCHEMY_INTERNALS,
        "test_sqlite_configuration_registry_does_not_grow_unbounded": _SQLALCHEMY_INTERNALS,
    },
    "tests/memory/test_compaction_suffix.py": {
        "test_suffix_transaction_rolls_back_failed_insert": _SQLITE_INTERNALS,
        "test_cancelled_suffix_transaction_settles_before_newer_append": _SQLITE_INTERNALS,
        "test_expired_prefix_does_not_block_full_live_window": _PRUNED_PREFIX,
        "test_failed_encrypted_suffix_transaction_preserves_original_tokens": _PRUNED_PREFIX,
        "test_repeated_ttl_bursts_do_not_accumulate_expired_rows": _PRUNED_PREFIX,
        "test_prefix_cleanup_stops_before_retained_history": _PRUNED_PREFIX,
        "test_unverifiable_rows_inside_snapshot_are_retained": _PRUNED_PREFIX,
    },
}

_client: AsyncClient | None = None
_test_namespace = ""
_built = 0
# What the report file gets: nodeid -> outcome / sessions built / reason.
_outcomes: dict[str, str] = {}
_sessions: dict[str, int] = {}
_deselected: dict[str, str] = {}


def _shared_client() -> AsyncClient:
    global _client
    if _client is None:
        # No deadline: some upstream tests replace time.time process-wide
        # (through cryptography.fernet's clock), which gRPC deadlines read.
        _client = AsyncClient(os.environ[ADDRESS_VARIABLE], timeout=None)
    return _client


def _namespace(location: object) -> str:
    """The namespace of a store at `location` in the running test: an
    in-memory database is private to its store."""
    place = str(location)
    if place == ":memory:" or place.endswith("/:memory:"):
        place = f"memory:{uuid.uuid4()}"
    return f"{_test_namespace}|{place}"


def _built_one() -> None:
    global _built
    _built += 1


class SQLiteShaped(AgentStateSession):
    """``SQLiteSession(session_id, db_path, ..., session_settings=...)``."""

    def __init__(
        self,
        session_id: str,
        db_path: str | Path = ":memory:",
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        session_settings: Any = None,
    ) -> None:
        super().__init__(
            session_id,
            _shared_client(),
            session_settings=session_settings,
            namespace=_namespace(db_path),
        )
        self.db_path = db_path
        _built_one()

    def close(self) -> None:
        """Nothing to release: the client is shared."""


class AsyncSQLiteShaped(SQLiteShaped):
    """``AsyncSQLiteSession``: the same, with an async close."""

    async def close(self) -> None:  # type: ignore[override]
        """Nothing to release: the client is shared."""


class SQLAlchemyShaped(AgentStateSession):
    """``SQLAlchemySession(session_id, engine=...)`` and its ``from_url``."""

    def __init__(
        self,
        session_id: str,
        *,
        engine: object,
        create_tables: bool = False,
        session_settings: Any = None,
        location: str | None = None,
        **storage_options: Any,
    ) -> None:
        super().__init__(
            session_id,
            _shared_client(),
            session_settings=session_settings,
            namespace=_namespace(location or f"engine:{id(engine)}"),
        )
        # Only for the tests to dispose of: our session never uses it.
        self.engine = engine
        _built_one()

    @classmethod
    def from_url(
        cls,
        session_id: str,
        *,
        url: str,
        engine_kwargs: dict[str, Any] | None = None,
        session_settings: Any = None,
        **storage_options: Any,
    ) -> SQLAlchemyShaped:
        from sqlalchemy.ext.asyncio import create_async_engine

        return cls(
            session_id,
            engine=create_async_engine(url, **(engine_kwargs or {})),
            session_settings=session_settings,
            location=url,
            **storage_options,
        )


_SHAPES = {
    "SQLiteSession": SQLiteShaped,
    "AsyncSQLiteSession": AsyncSQLiteShaped,
    "SQLAlchemySession": SQLAlchemyShaped,
}


def _relative(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        name = getattr(item, "originalname", item.name)
        reason = NOT_APPLICABLE.get(_relative(item), {}).get(name)
        (dropped if reason else kept).append(item)
        if reason:
            _deselected[item.nodeid] = reason
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(autouse=True)
def agent_state_sessions(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Our session where the test module builds the SDK's stores."""
    global _test_namespace, _built
    _test_namespace = f"{uuid.uuid4()}|{request.node.nodeid}"
    _built = 0
    module = request.module
    for name, shape in _SHAPES.items():
        if name in vars(module):
            monkeypatch.setattr(module, name, shape)
    yield
    _sessions[request.node.nodeid] = _built


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # The call's outcome, unless setup or teardown failed (or setup skipped).
    if report.outcome != "passed":
        _outcomes[report.nodeid] = report.outcome
    elif report.when == "call":
        _outcomes.setdefault(report.nodeid, "passed")


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(REPORT_VARIABLE)
    if target:
        report = {"outcomes": _outcomes, "sessions": _sessions, "deselected": _deselected}
        Path(target).write_text(json.dumps(report, indent=1, sort_keys=True))
