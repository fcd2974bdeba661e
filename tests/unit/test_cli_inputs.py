"""What the CLI's client commands read, without a server: messages as JSON
lines (the form --json prints them in), option values, and how a failed
call is told."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from agent_state.cli.inputs import duration, label, message_from_json, messages_from_lines, moment
from agent_state.cli.render import message_json
from agent_state.cli.session import describe_failure
from agent_state_client.errors import from_status
from agent_state_client.types import (
    Body,
    ImageDetail,
    Message,
    MessageInput,
    Role,
    Text,
    ToolImage,
    ToolOutput,
    ToolText,
    UnknownBody,
)


def test_text_messages_and_their_defaults() -> None:
    lines = ['{"text": "hi"}', "", '  {"role": "assistant", "kind": "k", "body": {"text": "yo"}}']
    assert messages_from_lines(lines) == [
        MessageInput(Role.USER, Text("hi")),
        MessageInput(Role.ASSISTANT, Text("yo"), "k"),
    ]


def test_a_tool_output_is_from_the_tool_unless_told() -> None:
    line = {"body": {"tool_output": {"tool_name": "t", "tool_call_id": "c", "text": "out"}}}
    parsed = message_from_json(line)
    assert parsed == MessageInput(Role.TOOL, ToolOutput("t", "c", ToolText("out")))
    assert message_from_json({**line, "role": "user"}).role is Role.USER


def test_every_body_printed_as_json_reads_back_the_same() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    image = ToolImage("https://i.example/p.png", "image/png", ImageDetail.AUTO, 4, 5, "aa")
    bodies: list[Body] = [
        Text("line\nwith \x00 and ünïcode"),
        ToolOutput("search", "call_1", ToolText(""), {"source": "web"}),
        ToolOutput("camera", "call_2", image),
        UnknownBody(b"\x2a\x01\x00"),
    ]
    for body in bodies:
        printed = message_json(Message("m", "c", Role.ASSISTANT, "kind", body, created), 3)
        line = json.dumps(printed)
        assert messages_from_lines([line]) == [MessageInput(Role.ASSISTANT, body, "kind")]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "line 1: not JSON"),
        ("[1]", "line 1: a message: must be a JSON object"),
        ('{"text": "x", "colour": 1}', "unknown field 'colour'"),
        ('{"role": "user"}', 'give either "text" or "body"'),
        ('{"text": "x", "body": {"text": "y"}}', 'give either "text" or "body"'),
        ('{"text": 3}', "text: must be a string"),
        ('{"text": "x", "role": "system"}', "role: 'system' is not one of user, assistant, tool"),
        ('{"body": {}}', 'body: needs exactly one of "text", "tool_output", "unknown"'),
        ('{"body": {"unknown": "%%%"}}', "body.unknown: not base64"),
        (
            '{"body": {"tool_output": {"tool_name": "t", "tool_call_id": "c"}}}',
            'body.tool_output: give either "text" or "image"',
        ),
        (
            '{"body": {"tool_output": {"text": "x", "metadata": {"k": 1}}}}',
            "body.tool_output.metadata['k']: must be a string",
        ),
        (
            '{"body": {"tool_output": {"image": {"detail": "huge"}}}}',
            "body.tool_output.image.detail: 'huge' is not one of",
        ),
        (
            '{"body": {"tool_output": {"image": {"width_px": "4"}}}}',
            "body.tool_output.image.width_px: must be an integer",
        ),
    ],
)
def test_a_bad_line_is_named_with_its_problem(line: str, problem: str) -> None:
    with pytest.raises(ValueError, match="line 2: ") as raised:
        messages_from_lines(['{"text": "fine"}', line])
    assert problem.removeprefix("line 1: ") in str(raised.value)


def test_no_messages_at_all_is_refused() -> None:
    with pytest.raises(ValueError, match="no messages"):
        messages_from_lines(["", "  "])


def test_labels_durations_and_times() -> None:
    assert label("team=search") == ("team", "search")
    assert label("empty=") == ("empty", "")
    assert label("a=b=c") == ("a", "b=c")
    for bad in ("novalue", "=v"):
        with pytest.raises(ValueError, match="key=value"):
            label(bad)
    assert duration("90") == timedelta(seconds=90)
    assert duration("1.5m") == timedelta(seconds=90)
    assert duration("12h") == timedelta(hours=12)
    assert duration("30d") == timedelta(days=30)
    with pytest.raises(ValueError, match="not a duration"):
        duration("soon")
    assert moment("2026-01-31T12:00:00Z") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert moment("2026-01-31T12:00:00") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO 8601"):
        moment("yesterday")


@pytest.mark.parametrize(
    ("details", "tls", "told"),
    [
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:5: Tls "
            "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL "
            "routines:OPENSSL_internal:WRONG_VERSION_NUMBER: Invalid certificate verification",
            True,
            "h:5 does not speak TLS: connect without --tls and --tls-*",
        ),
        (
            "last error: UNKNOWN: ...: CERTIFICATE_VERIFY_FAILED: unable to get local issuer",
            True,
            "the certificate of h:5 is not signed by a CA this client trusts",
        ),
        (
            "last error: UNKNOWN: Custom verification check failed with error: UNAUTHENTICATED:"
            " Hostname Verification Check failed.",
            True,
            "the certificate of h:5 is for another name",
        ),
        (
            "last error: UNAVAILABLE: ipv4:127.0.0.1:5: Socket closed",
            False,
            "h:5 closed the connection (a TLS server? try --tls)",
        ),
        ("last error: UNAVAILABLE: ipv4:127.0.0.1:5: Socket closed", True, "Socket closed"),
        ("...: Failed to connect to remote host: Connection refused", False, "nothing listens"),
        ("the database is unreachable", False, "the database is unreachable"),
    ],
)
def test_connection_failures_are_told_in_words(details: str, tls: bool, told: str) -> None:
    error = from_status(grpc.StatusCode.UNAVAILABLE, details, (), "rid-1")
    line = describe_failure(error, "h:5", tls)
    assert line.startswith("UNAVAILABLE: ")
    assert told in line
    assert line.endswith(" (request id rid-1)")


def test_other_failures_keep_the_servers_words_and_the_request_id() -> None:
    trailing = (("x-request-id", "logged-as"),)
    error = from_status(grpc.StatusCode.NOT_FOUND, "snapshot_id: gone", trailing, "sent")
    assert describe_failure(error, "h:5", False) == (
        "NOT_FOUND: snapshot_id: gone (request id logged-as)"
    )
