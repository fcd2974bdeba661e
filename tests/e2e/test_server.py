"""The process around the service: health, reflection, configuration, shutdown, outages."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import postgres_location
from tests.e2e.helpers import UNAVAILABLE, new_id
from tests.support.calls import Stub, all_ids, append, get, list_page, make_stub, text_message
from tests.support.postgres import postgres_url_from_conninfo
from tests.support.server import ServerProcess, free_port, health_check
from tests.support.tcp_proxy import TcpProxy

SERVICE = "agynio.api.agent_state.v1.AgentStateService"
PACKAGE = "agynio.api.agent_state.v1"
METHODS = {
    "AppendConversationMessages": (
        "AppendConversationMessagesRequest",
        "AppendConversationMessagesResponse",
    ),
    "ListConversationMessages": (
        "ListConversationMessagesRequest",
        "ListConversationMessagesResponse",
    ),
    "ReplaceConversationMessagesRange": (
        "ReplaceConversationMessagesRangeRequest",
        "ReplaceConversationMessagesRangeResponse",
    ),
    "DeleteConversationMessagesRange": (
        "DeleteConversationMessagesRangeRequest",
        "DeleteConversationMessagesRangeResponse",
    ),
    "GetConversation": ("GetConversationRequest", "GetConversationResponse"),
    "ListConversationMessageIds": (
        "ListConversationMessageIdsRequest",
        "ListConversationMessageIdsResponse",
    ),
    "ListSnapshotMessages": ("ListSnapshotMessagesRequest", "ListSnapshotMessagesResponse"),
    "ListSnapshotMessageIds": ("ListSnapshotMessageIdsRequest", "ListSnapshotMessageIdsResponse"),
    "CreateSnapshot": ("CreateSnapshotRequest", "CreateSnapshotResponse"),
}


def test_health_reports_serving(channel: grpc.Channel, stub: Stub) -> None:
    reply = health_check(channel, "", timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_health_unknown_service_is_not_found(channel: grpc.Channel, stub: Stub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        health_check(channel, "no.such.Service", timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_describes_the_service(channel: grpc.Channel, stub: Stub) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    assert SERVICE in list(database.get_services())
    pool = DescriptorPool(database)
    service = pool.FindServiceByName(SERVICE)
    assert {m.name for m in service.methods} == set(METHODS)
    assert len(service.methods) == 9
    for method in service.methods:
        request, response = METHODS[method.name]
        assert method.input_type.full_name == f"{PACKAGE}.{request}"
        assert method.output_type.full_name == f"{PACKAGE}.{response}"
        assert not method.client_streaming
        assert not method.server_streaming
    # The message types resolve too, field for field.
    message = pool.FindMessageTypeByName(f"{PACKAGE}.Message")
    assert [(f.name, f.number) for f in message.fields] == [
        ("id", 1),
        ("conversation_id", 2),
        ("role", 3),
        ("kind", 4),
        ("body", 5),
        ("created_at", 6),
    ]


def _start(
    url: str, log: Path, *, via_environment: bool = False, extra_args: Sequence[str] = ()
) -> ServerProcess:
    process = ServerProcess(database_url=url, log_path=log, extra_args=list(extra_args))
    return process.start_ready(via_environment=via_environment)


def _exercise(process: ServerProcess) -> None:
    with grpc.insecure_channel(process.address) as chan:
        stub = make_stub(chan)
        cid = new_id()
        append(stub, cid, [text_message("hello")])
        assert get(stub, cid).message_count == 1


def test_sigterm_drains_and_exits_zero(
    make_database_url: Callable[[], str], tmp_path: Path
) -> None:
    process = _start(make_database_url(), tmp_path / "sigterm.log")
    try:
        _exercise(process)
        started = time.monotonic()
        code = process.terminate(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        process.terminate()
    assert code == 0, f"exit code {code} after SIGTERM: {process.describe()}"
    assert elapsed < 10


def test_sigterm_under_load_loses_no_acknowledged_write(
    make_database_url: Callable[[], str], tmp_path: Path
) -> None:
    url = make_database_url()
    process = _start(url, tmp_path / "load.log")
    stop = threading.Event()
    acknowledged: dict[str, list[str]] = {new_id(): [] for _ in range(8)}

    def work(cid: str) -> None:
        with grpc.insecure_channel(process.address) as chan:
            stub = make_stub(chan)
            i = 0
            while not stop.is_set():
                try:
                    response = append(stub, cid, [text_message(f"{i}-{k}") for k in range(5)])
                except grpc.RpcError:
                    return
                acknowledged[cid] += [m.id for m in response.appended]
                i += 1

    threads = [threading.Thread(target=work, args=(cid,)) for cid in acknowledged]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        code = process.terminate(timeout=10)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop.set()
        process.terminate()
    assert code == 0, process.describe()
    restarted = _start(url, tmp_path / "after-load.log")
    try:
        with grpc.insecure_channel(restarted.address) as chan:
            stub = make_stub(chan)
            for cid, ids in acknowledged.items():
                assert ids, "the load did not get going before SIGTERM"
                stored = all_ids(stub, cid)
                assert stored[: len(ids)] == ids, "an acknowledged append was lost"
                assert len(stored) - len(ids) in (0, 5), "a batch was stored in part"
    finally:
        restarted.terminate()


def test_sigterm_lets_calls_in_flight_finish(
    make_database_url: Callable[[], str], tmp_path: Path
) -> None:
    """Draining: calls the server received before SIGTERM complete normally."""
    url = make_database_url()
    process = _start(url, tmp_path / "drain.log")
    batch = [text_message(f"{i}:" + "x" * 1000) for i in range(1000)]  # about 1 MiB
    calls = 6
    ready = threading.Barrier(calls + 1)
    results: dict[str, str] = {}

    def call(cid: str) -> None:
        with grpc.insecure_channel(process.address) as chan:
            stub = make_stub(chan)
            append(stub, cid, [text_message("warm up the connection")])
            ready.wait(timeout=30)
            try:
                results[cid] = f"OK {len(append(stub, cid, batch).appended)}"
            except grpc.RpcError as exc:
                results[cid] = f"{exc.code().name} {exc.details()}"

    cids = [new_id() for _ in range(calls)]
    threads = [threading.Thread(target=call, args=(cid,)) for cid in cids]
    try:
        for thread in threads:
            thread.start()
        ready.wait(timeout=30)
        time.sleep(0.15)  # the requests (about 1 MiB each) are on the server by now
        code = process.terminate(timeout=20)
        for thread in threads:
            thread.join(timeout=30)
    finally:
        process.terminate()
    assert code == 0, process.describe()
    assert [results.get(cid) for cid in cids] == ["OK 1000"] * calls, (
        f"calls received before SIGTERM must complete: {results}"
    )
    restarted = _start(url, tmp_path / "after-drain.log")
    try:
        with grpc.insecure_channel(restarted.address) as chan:
            stub = make_stub(chan)
            assert [get(stub, cid).message_count for cid in cids] == [1001] * calls
    finally:
        restarted.terminate()


def test_configuration_from_environment(
    make_database_url: Callable[[], str], tmp_path: Path
) -> None:
    process = _start(make_database_url(), tmp_path / "env.log", via_environment=True)
    try:
        _exercise(process)
    finally:
        code = process.terminate(timeout=10)
    assert code == 0, process.describe()


def test_restart_keeps_data(make_database_url: Callable[[], str], tmp_path: Path) -> None:
    url = make_database_url()
    first = _start(url, tmp_path / "first.log")
    cid = new_id()
    try:
        with grpc.insecure_channel(first.address) as chan:
            appended = append(make_stub(chan), cid, [text_message("kept")]).appended[0]
    finally:
        assert first.terminate() == 0, first.describe()
    second = _start(url, tmp_path / "second.log")
    try:
        with grpc.insecure_channel(second.address) as chan:
            stub = make_stub(chan)
            metadata = get(stub, cid)
            assert metadata.message_count == 1
            assert list(list_page(stub, cid).messages) == [appended]
    finally:
        second.terminate()


@pytest.mark.postgres
def test_storage_outage_is_unavailable_and_leaks_nothing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """PostgreSQL behind a TCP proxy that the test cuts and restores."""
    make: Callable[[], str] = request.getfixturevalue("make_postgres_database")
    conninfo = make()
    real = conninfo_to_dict(conninfo)
    proxy = TcpProxy(str(real.get("host", "127.0.0.1")), int(str(real.get("port", 5432))))
    proxy.start()
    password = "pw-" + new_id().replace("-", "")
    url = postgres_url_from_conninfo(conninfo, host="127.0.0.1", port=proxy.port, password=password)
    metrics_port = free_port()
    process = _start(
        url, tmp_path / "outage.log", extra_args=["--metrics-address", f"127.0.0.1:{metrics_port}"]
    )
    try:
        with grpc.insecure_channel(process.address) as chan:
            stub = make_stub(chan)
            cid = new_id()
            append(stub, cid, [text_message("before the outage")])
            proxy.stop()
            # One write during the outage. (A second call may wait for the server's
            # connection-pool timeout before it is answered; that costs time, not coverage.)
            with pytest.raises(grpc.RpcError) as info:
                append(stub, cid, [text_message("during the outage")])
            details = info.value.details() or ""
            assert info.value.code() == UNAVAILABLE, (
                f"expected UNAVAILABLE, got {info.value.code().name}: {details!r}"
            )
            leaked = [
                secret
                for secret in (
                    password,
                    "postgresql://",
                    "postgres://",
                    str(real.get("dbname")),
                    f":{proxy.port}",
                    "dbname=",
                    "host=",
                    "password",
                    "SELECT ",
                    "INSERT ",
                    "UPDATE ",
                    " WHERE ",
                )
                if secret in details
            ]
            assert not leaked, f"status details leak {leaked}: {details!r}"
            # Safe to retry: once the database is back, the same calls succeed.
            proxy.start()
            deadline = time.monotonic() + 30
            codes: list[grpc.StatusCode] = []
            while True:
                try:
                    count = get(stub, cid).message_count
                    break
                except grpc.RpcError as exc:
                    codes.append(exc.code())
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            assert set(codes) <= {UNAVAILABLE}, codes
            assert count == 1
            append(stub, cid, [text_message("after the outage")])
            assert get(stub, cid).message_count == 2
        # The outage shows in the metrics: every UNAVAILABLE was a storage error.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            samples = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(response.read().decode())
                for sample in family.samples
            }
        append_method = (("method", "AppendConversationMessages"),)
        get_method = (("method", "GetConversation"),)
        assert samples[("agent_state_storage_errors_total", append_method)] == 1
        assert samples.get(("agent_state_storage_errors_total", get_method), 0) == len(codes)
        unavailable = (("code", "UNAVAILABLE"), *append_method)
        assert samples[("agent_state_rpc_requests_total", unavailable)] == 1
        ok = (("code", "OK"), *append_method)
        assert samples[("agent_state_rpc_requests_total", ok)] == 2
    finally:
        proxy.stop()
        process.terminate()


@pytest.mark.postgres
def test_a_fresh_postgres_database_is_analyzed_once_it_holds_data(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The migrations leave a fresh database's statistics saying "empty";
    the server analyzes the tables as soon as they hold rows, instead of
    leaving the planner with that until autovacuum's first visit."""
    url = postgres_location("postgres", request, shared=False)
    reltuples = (
        "SELECT relname::text, reltuples FROM pg_class"
        " WHERE relname IN ('messages', 'conversations') ORDER BY relname"
    )
    with (
        ServerProcess(url, tmp_path / "server.log") as server,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        # Only the server may analyze them during the test.
        conn.execute("ALTER TABLE messages SET (autovacuum_enabled = false)")
        conn.execute("ALTER TABLE conversations SET (autovacuum_enabled = false)")
        assert conn.execute(reltuples).fetchall() == [("conversations", 0), ("messages", 0)]
        with grpc.insecure_channel(server.address) as channel:
            append(make_stub(channel), new_id(), [text_message("a"), text_message("b")])
        deadline = time.monotonic() + 30
        while conn.execute(reltuples).fetchall() != [("conversations", 1), ("messages", 2)]:
            assert time.monotonic() < deadline, conn.execute(reltuples).fetchall()
            time.sleep(0.1)
        # The server logs after its ANALYZE commits, so the line may trail
        # the statistics by a moment.
        while "their planner statistics said empty" not in server.output():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
