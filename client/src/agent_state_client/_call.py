"""One call of one RPC, the way every method of the client makes it: the
request metadata (token, request id, trace context, idempotency key,
if-version), the deadline, retries with backoff, the version from the
trailing metadata, and the error for a failed status."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import grpc
from google.protobuf.message import Message as ProtoMessage

from . import _ids, errors
from ._gen import agent_state_pb2 as pb
from ._gen import checkpoints_pb2 as kpb
from ._gen import conversations_pb2 as cpb
from ._tracing import trace_metadata

IDEMPOTENCY_KEY = "idempotency-key"
IF_VERSION = "if-version"

ResponseT = TypeVar("ResponseT", bound=ProtoMessage)

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a call is retried when the server is unreachable or slow
    (UNAVAILABLE, DEADLINE_EXCEEDED).

    Retrying is safe: reads change nothing, and every write carries an
    idempotency key, the same on each attempt, so the server applies it
    once and replays its answer.

    The wait before retry *n* (1, 2, ...) is drawn uniformly between 0 and
    ``min(max_backoff, initial_backoff * multiplier ** (n - 1))`` seconds
    ("full jitter", so that many clients do not retry in step).
    """

    attempts: int = 4
    """Tries in all, the first included; 1: no retry."""
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    total_timeout: float | None = None
    """Seconds all attempts and waits together may take (None: no bound
    beyond each attempt's timeout). The last attempt gets what is left."""
    codes: frozenset[grpc.StatusCode] = field(
        default=frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
    )
    """The status codes that are retried."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts: must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoff: must not be negative (multiplier at least 1)")
        if self.total_timeout is not None and self.total_timeout <= 0:
            raise ValueError("total_timeout: must be positive (None: no bound)")

    def backoff(self, retry: int, draw: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `retry` (from 1)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return draw() * ceiling


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True, slots=True)
class CallOptions:
    """What every call of a client (view) sends and how long it waits."""

    timeout: float | None
    """Seconds one attempt may take (None: no deadline)."""
    retry: RetryPolicy
    request_id: str | None
    """Sent as x-request-id; None: a new one per call (kept across retries)."""
    metadata: Metadata
    """Sent on every call: the token, then any extra entries."""


@dataclass(frozen=True, slots=True)
class Rpc(Generic[ResponseT]):
    """One method of one service."""

    service: str
    name: str
    response: type[ResponseT]
    keyed: bool = False
    """A write that takes an idempotency key."""

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


@dataclass(frozen=True, slots=True)
class Reply(Generic[ResponseT]):
    """An answer and the conversation's version the server sent with it."""

    response: ResponseT
    version: int | None


def _serialize(message: ProtoMessage) -> bytes:
    return message.SerializeToString()


def _metadata_items(metadata: object) -> errors.Metadata:
    if metadata is None:
        return ()
    return tuple((str(key), value) for key, value in metadata)  # type: ignore[attr-defined]


class _LoopChannel:
    """A channel and its method objects, made in (and bound to) one event loop."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.methods: dict[str, grpc.aio.UnaryUnaryMultiCallable[ProtoMessage, ProtoMessage]] = {}


class Caller:
    """Makes calls over a channel made on first use in each event loop that
    calls, shared by every view of a client.

    A gRPC asyncio channel belongs to the loop it was made in; a client
    may still be used from several loops, one after another or from
    several threads at once (``asyncio.run`` per request,
    ``Runner.run_sync`` of the OpenAI Agents SDK): each loop gets a
    channel of its own, and the channels of loops that have closed are
    dropped."""

    def __init__(self, make_channel: Callable[[], grpc.aio.Channel]) -> None:
        self._make_channel = make_channel
        self._lock = threading.Lock()
        self._channels: dict[asyncio.AbstractEventLoop, _LoopChannel] = {}

    def _method(
        self, rpc: Rpc[ResponseT]
    ) -> grpc.aio.UnaryUnaryMultiCallable[ProtoMessage, ProtoMessage]:
        loop = asyncio.get_running_loop()
        with self._lock:
            opened = self._channels.get(loop)
            if opened is None:
                for gone in [other for other in self._channels if other.is_closed()]:
                    del self._channels[gone]
                opened = self._channels[loop] = _LoopChannel(self._make_channel())
        method = opened.methods.get(rpc.path)
        if method is None:
            method = opened.channel.unary_unary(
                rpc.path,
                request_serializer=_serialize,
                response_deserializer=rpc.response.FromString,
            )
            opened.methods[rpc.path] = method
        return method

    async def close(self) -> None:
        """Close the channel of the running loop, and ask the other loops
        still running to close theirs (a closed loop's channel is gone with it)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            channels, self._channels = self._channels, {}
        for owner, opened in channels.items():
            if owner is loop:
                await opened.channel.close()
            elif owner.is_running():
                asyncio.run_coroutine_threadsafe(opened.channel.close(), owner)

    async def call(
        self,
        options: CallOptions,
        rpc: Rpc[ResponseT],
        request: ProtoMessage,
        *,
        idempotency_key: str | None = None,
        if_version: int | None = None,
    ) -> Reply[ResponseT]:
        """Make the call, retrying as `options.retry` says; raise the
        AgentStateError of its last failure."""
        request_id = options.request_id or _ids.request_id()
        metadata = [*options.metadata, (errors.REQUEST_ID, request_id), *trace_metadata()]
        if rpc.keyed:
            metadata.append((IDEMPOTENCY_KEY, idempotency_key or _ids.idempotency_key()))
        if if_version is not None:
            metadata.append((IF_VERSION, str(if_version)))
        method = self._method(rpc)
        policy = options.retry
        started = time.monotonic()
        attempt = 1
        while True:
            timeout = options.timeout
            if policy.total_timeout is not None:
                left = policy.total_timeout - (time.monotonic() - started)
                timeout = left if timeout is None else min(timeout, left)
            call = method(request, timeout=timeout, metadata=tuple(metadata))
            try:
                response = await call
                trailing = _metadata_items(await call.trailing_metadata())
            except grpc.aio.AioRpcError as failure:
                trailing = _metadata_items(failure.trailing_metadata())
                error = errors.from_status(
                    failure.code(), failure.details() or "", trailing, request_id
                )
                wait = policy.backoff(attempt)
                if not self._retryable(policy, failure.code(), attempt, started, wait):
                    raise error from failure
                await asyncio.sleep(wait)
                attempt += 1
                continue
            return Reply(cast(ResponseT, response), errors.version_in(trailing))

    @staticmethod
    def _retryable(
        policy: RetryPolicy, code: grpc.StatusCode, attempt: int, started: float, wait: float
    ) -> bool:
        if code not in policy.codes or attempt >= policy.attempts:
            return False
        if policy.total_timeout is None:
            return True
        return time.monotonic() - started + wait < policy.total_timeout


# --- the methods of the services -----------------------------------------------

AGENT_STATE = pb.DESCRIPTOR.services_by_name["AgentStateService"].full_name
CONVERSATIONS = cpb.DESCRIPTOR.services_by_name["ConversationsService"].full_name
CHECKPOINTS = kpb.DESCRIPTOR.services_by_name["CheckpointsService"].full_name


def _agynio(name: str, response: type[ResponseT], *, write: bool = False) -> Rpc[ResponseT]:
    # Its writes all take a key; their version condition is `if-version`
    # metadata (the contract has no field for it).
    return Rpc(AGENT_STATE, name, response, keyed=write)


def _companion(name: str, response: type[ResponseT], *, keyed: bool = False) -> Rpc[ResponseT]:
    return Rpc(CONVERSATIONS, name, response, keyed=keyed)


APPEND = _agynio("AppendConversationMessages", pb.AppendConversationMessagesResponse, write=True)
LIST_MESSAGES = _agynio("ListConversationMessages", pb.ListConversationMessagesResponse)
REPLACE_RANGE = _agynio(
    "ReplaceConversationMessagesRange", pb.ReplaceConversationMessagesRangeResponse, write=True
)
DELETE_RANGE = _agynio(
    "DeleteConversationMessagesRange", pb.DeleteConversationMessagesRangeResponse, write=True
)
GET_CONVERSATION = _agynio("GetConversation", pb.GetConversationResponse)
LIST_MESSAGE_IDS = _agynio("ListConversationMessageIds", pb.ListConversationMessageIdsResponse)
LIST_SNAPSHOT_MESSAGES = _agynio("ListSnapshotMessages", pb.ListSnapshotMessagesResponse)
LIST_SNAPSHOT_MESSAGE_IDS = _agynio("ListSnapshotMessageIds", pb.ListSnapshotMessageIdsResponse)
CREATE_SNAPSHOT = _agynio("CreateSnapshot", pb.CreateSnapshotResponse, write=True)

# Every write takes a key. CreateConversation and ForkConversation name the
# new conversation all the same (the client makes its id when the caller
# does not): a time-ordered id made by the client sorts as the server's would.
CREATE_CONVERSATION = _companion("CreateConversation", cpb.Conversation, keyed=True)
DESCRIBE_CONVERSATION = _companion("DescribeConversation", cpb.Conversation)
UPDATE_CONVERSATION = _companion("UpdateConversation", cpb.Conversation, keyed=True)
LIST_CONVERSATIONS = _companion("ListConversations", cpb.ListConversationsResponse)
DELETE_CONVERSATION = _companion("DeleteConversation", cpb.DeleteConversationResponse, keyed=True)
TAIL = _companion("TailConversationMessages", cpb.TailConversationMessagesResponse)
GET_MESSAGES = _companion("GetMessages", cpb.GetMessagesResponse)
FORK = _companion("ForkConversation", cpb.ForkConversationResponse, keyed=True)
GET_STATE = _companion("GetState", cpb.GetStateResponse)
UPDATE_STATE = _companion("UpdateState", cpb.UpdateStateResponse, keyed=True)
APPEND_WITH_STATE = _companion(
    "AppendMessagesWithState", cpb.AppendMessagesWithStateResponse, keyed=True
)
LIST_SNAPSHOTS = _companion("ListConversationSnapshots", cpb.ListConversationSnapshotsResponse)


def _checkpoints(name: str, response: type[ResponseT]) -> Rpc[ResponseT]:
    # Its writes are idempotent by themselves: no key is needed to retry them.
    return Rpc(CHECKPOINTS, name, response)


PUT_CHECKPOINT = _checkpoints("PutCheckpoint", kpb.PutCheckpointResponse)
PUT_WRITES = _checkpoints("PutWrites", kpb.PutWritesResponse)
GET_CHECKPOINT = _checkpoints("GetCheckpoint", kpb.GetCheckpointResponse)
LIST_CHECKPOINTS = _checkpoints("ListCheckpoints", kpb.ListCheckpointsResponse)
DELETE_THREAD = _checkpoints("DeleteThread", kpb.DeleteThreadResponse)
COPY_THREAD = _checkpoints("CopyThread", kpb.CopyThreadResponse)
PRUNE = _checkpoints("Prune", kpb.PruneResponse)
DELETE_FOR_RUNS = _checkpoints("DeleteForRuns", kpb.DeleteForRunsResponse)

ALL: tuple[Rpc[Any], ...] = (
    APPEND,
    LIST_MESSAGES,
    REPLACE_RANGE,
    DELETE_RANGE,
    GET_CONVERSATION,
    LIST_MESSAGE_IDS,
    LIST_SNAPSHOT_MESSAGES,
    LIST_SNAPSHOT_MESSAGE_IDS,
    CREATE_SNAPSHOT,
    CREATE_CONVERSATION,
    DESCRIBE_CONVERSATION,
    UPDATE_CONVERSATION,
    LIST_CONVERSATIONS,
    DELETE_CONVERSATION,
    TAIL,
    GET_MESSAGES,
    FORK,
    GET_STATE,
    UPDATE_STATE,
    APPEND_WITH_STATE,
    LIST_SNAPSHOTS,
    PUT_CHECKPOINT,
    PUT_WRITES,
    GET_CHECKPOINT,
    LIST_CHECKPOINTS,
    DELETE_THREAD,
    COPY_THREAD,
    PRUNE,
    DELETE_FOR_RUNS,
)
"""Every method of the services; a test checks it against their descriptors."""
