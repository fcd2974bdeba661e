"""agent-state-client: a typed Python client of agent-state.

`AsyncClient` (asyncio) and `Client` (blocking) have the same methods: every
RPC of ``agynio.api.agent_state.v1.AgentStateService``, of the companion
``agentstate.v1.ConversationsService`` and of the checkpoint store
``agentstate.v1.CheckpointsService`` (a LangGraph checkpointer over it:
`agent_state_client.integrations.langgraph`), with answers as frozen dataclasses
(`agent_state_client.types`) and failures as exceptions named after their
condition (`agent_state_client.errors`).

The names below are loaded on first use, so that importing the package (or
only its generated code, `agent_state_client._gen`, as the server does)
does not import grpc: a program may still set GRPC_VERBOSITY and gRPC's
other settings before grpc is first imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._async import UNCHANGED as UNCHANGED
    from ._async import AsyncClient as AsyncClient
    from ._call import NO_RETRY as NO_RETRY
    from ._call import RetryPolicy as RetryPolicy
    from ._connect import parse_address as parse_address
    from ._sync import Client as Client
    from .errors import AgentStateError as AgentStateError
    from .errors import AlreadyExists as AlreadyExists
    from .errors import Cancelled as Cancelled
    from .errors import ContextChanged as ContextChanged
    from .errors import ConversationNotFound as ConversationNotFound
    from .errors import DeadlineExceeded as DeadlineExceeded
    from .errors import FailedPrecondition as FailedPrecondition
    from .errors import InternalError as InternalError
    from .errors import InvalidArgument as InvalidArgument
    from .errors import MessageNotFound as MessageNotFound
    from .errors import NotFound as NotFound
    from .errors import PagingError as PagingError
    from .errors import PermissionDenied as PermissionDenied
    from .errors import ResourceExhausted as ResourceExhausted
    from .errors import SnapshotNotFound as SnapshotNotFound
    from .errors import Unauthenticated as Unauthenticated
    from .errors import Unavailable as Unavailable
    from .errors import Unimplemented as Unimplemented
    from .errors import VersionConflict as VersionConflict
    from .types import AppendResult as AppendResult
    from .types import AppendWithStateResult as AppendWithStateResult
    from .types import Body as Body
    from .types import ChannelValue as ChannelValue
    from .types import ChannelWrite as ChannelWrite
    from .types import CheckpointPage as CheckpointPage
    from .types import Context as Context
    from .types import Conversation as Conversation
    from .types import ConversationMetadata as ConversationMetadata
    from .types import ConversationPage as ConversationPage
    from .types import DeletedConversation as DeletedConversation
    from .types import DeleteRangeResult as DeleteRangeResult
    from .types import Fork as Fork
    from .types import IdPage as IdPage
    from .types import ImageDetail as ImageDetail
    from .types import Message as Message
    from .types import MessageInput as MessageInput
    from .types import MessagePage as MessagePage
    from .types import Messages as Messages
    from .types import PendingWrite as PendingWrite
    from .types import PruneStrategy as PruneStrategy
    from .types import ReplaceResult as ReplaceResult
    from .types import Retention as Retention
    from .types import Role as Role
    from .types import Serialized as Serialized
    from .types import Snapshot as Snapshot
    from .types import SnapshotInfo as SnapshotInfo
    from .types import SnapshotInfoPage as SnapshotInfoPage
    from .types import SnapshotPage as SnapshotPage
    from .types import State as State
    from .types import StateUpdate as StateUpdate
    from .types import StoredCheckpoint as StoredCheckpoint
    from .types import Tail as Tail
    from .types import Text as Text
    from .types import ToolImage as ToolImage
    from .types import ToolOutput as ToolOutput
    from .types import ToolText as ToolText
    from .types import UnknownBody as UnknownBody
    from .types import Value as Value

# Where each public name lives: the module is imported when the name is
# first read.
_HOMES = {
    "._async": ("UNCHANGED", "AsyncClient"),
    "._call": ("NO_RETRY", "RetryPolicy"),
    "._connect": ("parse_address",),
    "._sync": ("Client",),
    ".errors": (
        "AgentStateError", "AlreadyExists", "Cancelled", "ContextChanged",
        "ConversationNotFound", "DeadlineExceeded", "FailedPrecondition", "InternalError",
        "InvalidArgument", "MessageNotFound", "NotFound", "PagingError", "PermissionDenied",
        "ResourceExhausted", "SnapshotNotFound", "Unauthenticated", "Unavailable",
        "Unimplemented", "VersionConflict",
    ),
    ".types": (
        "AppendResult", "AppendWithStateResult", "Body", "ChannelValue", "ChannelWrite",
        "CheckpointPage", "Context", "Conversation", "ConversationMetadata", "ConversationPage",
        "DeleteRangeResult", "DeletedConversation", "Fork", "IdPage", "ImageDetail", "Message",
        "MessageInput", "MessagePage", "Messages", "PendingWrite", "PruneStrategy",
        "ReplaceResult", "Retention", "Role", "Serialized", "Snapshot", "SnapshotInfo",
        "SnapshotInfoPage", "SnapshotPage", "State", "StateUpdate", "StoredCheckpoint", "Tail",
        "Text", "ToolImage", "ToolOutput", "ToolText", "UnknownBody", "Value",
    ),
}  # fmt: skip
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = ["__version__", *_HOME_OF]


def __getattr__(name: str) -> object:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # read once, then an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME_OF])
