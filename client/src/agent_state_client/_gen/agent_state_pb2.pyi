import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_ASSISTANT: _ClassVar[Role]
    ROLE_TOOL: _ClassVar[Role]

class ImageDetail(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_DETAIL_UNSPECIFIED: _ClassVar[ImageDetail]
    IMAGE_DETAIL_AUTO: _ClassVar[ImageDetail]
    IMAGE_DETAIL_LOW: _ClassVar[ImageDetail]
    IMAGE_DETAIL_HIGH: _ClassVar[ImageDetail]
ROLE_UNSPECIFIED: Role
ROLE_USER: Role
ROLE_ASSISTANT: Role
ROLE_TOOL: Role
IMAGE_DETAIL_UNSPECIFIED: ImageDetail
IMAGE_DETAIL_AUTO: ImageDetail
IMAGE_DETAIL_LOW: ImageDetail
IMAGE_DETAIL_HIGH: ImageDetail

class TextBody(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class ToolTextOutput(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class ToolImageOutput(_message.Message):
    __slots__ = ("external_url", "mime_type", "detail", "width_px", "height_px", "sha256")
    EXTERNAL_URL_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    WIDTH_PX_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_PX_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    external_url: str
    mime_type: str
    detail: ImageDetail
    width_px: int
    height_px: int
    sha256: str
    def __init__(self, external_url: _Optional[str] = ..., mime_type: _Optional[str] = ..., detail: _Optional[_Union[ImageDetail, str]] = ..., width_px: _Optional[int] = ..., height_px: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class ToolOutputBody(_message.Message):
    __slots__ = ("tool_name", "tool_call_id", "text", "image", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    tool_name: str
    tool_call_id: str
    text: ToolTextOutput
    image: ToolImageOutput
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, tool_name: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., text: _Optional[_Union[ToolTextOutput, _Mapping]] = ..., image: _Optional[_Union[ToolImageOutput, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MessageBody(_message.Message):
    __slots__ = ("text", "tool_output")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    text: TextBody
    tool_output: ToolOutputBody
    def __init__(self, text: _Optional[_Union[TextBody, _Mapping]] = ..., tool_output: _Optional[_Union[ToolOutputBody, _Mapping]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "conversation_id", "role", "kind", "body", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    conversation_id: str
    role: Role
    kind: str
    body: MessageBody
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., kind: _Optional[str] = ..., body: _Optional[_Union[MessageBody, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ConversationMetadata(_message.Message):
    __slots__ = ("conversation_id", "message_count", "updated_at")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    message_count: int
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, conversation_id: _Optional[str] = ..., message_count: _Optional[int] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AppendMessageInput(_message.Message):
    __slots__ = ("role", "kind", "body")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    role: Role
    kind: str
    body: MessageBody
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., kind: _Optional[str] = ..., body: _Optional[_Union[MessageBody, _Mapping]] = ...) -> None: ...

class AppendConversationMessagesRequest(_message.Message):
    __slots__ = ("conversation_id", "messages")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    messages: _containers.RepeatedCompositeFieldContainer[AppendMessageInput]
    def __init__(self, conversation_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[AppendMessageInput, _Mapping]]] = ...) -> None: ...

class AppendConversationMessagesResponse(_message.Message):
    __slots__ = ("metadata", "appended")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    APPENDED_FIELD_NUMBER: _ClassVar[int]
    metadata: ConversationMetadata
    appended: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, metadata: _Optional[_Union[ConversationMetadata, _Mapping]] = ..., appended: _Optional[_Iterable[_Union[Message, _Mapping]]] = ...) -> None: ...

class ListConversationMessagesRequest(_message.Message):
    __slots__ = ("conversation_id", "roles", "kinds", "page_size", "page_token")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    roles: _containers.RepeatedScalarFieldContainer[Role]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    page_size: int
    page_token: str
    def __init__(self, conversation_id: _Optional[str] = ..., roles: _Optional[_Iterable[_Union[Role, str]]] = ..., kinds: _Optional[_Iterable[str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListConversationMessagesResponse(_message.Message):
    __slots__ = ("metadata", "messages", "next_page_token")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    metadata: ConversationMetadata
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    next_page_token: str
    def __init__(self, metadata: _Optional[_Union[ConversationMetadata, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReplaceConversationMessagesRangeRequest(_message.Message):
    __slots__ = ("conversation_id", "from_message_id", "to_message_id", "new_message_ids")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TO_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    from_message_id: str
    to_message_id: str
    new_message_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, conversation_id: _Optional[str] = ..., from_message_id: _Optional[str] = ..., to_message_id: _Optional[str] = ..., new_message_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReplaceConversationMessagesRangeResponse(_message.Message):
    __slots__ = ("metadata", "replaced_message_ids", "inserted_message_ids")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REPLACED_MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    INSERTED_MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    metadata: ConversationMetadata
    replaced_message_ids: _containers.RepeatedScalarFieldContainer[str]
    inserted_message_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, metadata: _Optional[_Union[ConversationMetadata, _Mapping]] = ..., replaced_message_ids: _Optional[_Iterable[str]] = ..., inserted_message_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteConversationMessagesRangeRequest(_message.Message):
    __slots__ = ("conversation_id", "from_message_id", "to_message_id")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TO_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    from_message_id: str
    to_message_id: str
    def __init__(self, conversation_id: _Optional[str] = ..., from_message_id: _Optional[str] = ..., to_message_id: _Optional[str] = ...) -> None: ...

class DeleteConversationMessagesRangeResponse(_message.Message):
    __slots__ = ("metadata", "deleted_message_ids")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DELETED_MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    metadata: ConversationMetadata
    deleted_message_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, metadata: _Optional[_Union[ConversationMetadata, _Mapping]] = ..., deleted_message_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class GetConversationResponse(_message.Message):
    __slots__ = ("metadata",)
    METADATA_FIELD_NUMBER: _ClassVar[int]
    metadata: ConversationMetadata
    def __init__(self, metadata: _Optional[_Union[ConversationMetadata, _Mapping]] = ...) -> None: ...

class ContextSnapshot(_message.Message):
    __slots__ = ("snapshot_id", "conversation_id", "created_at")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    conversation_id: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, snapshot_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SnapshotItem(_message.Message):
    __slots__ = ("message_id", "role", "kind", "body", "body_sha256")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    BODY_SHA256_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    role: Role
    kind: str
    body: MessageBody
    body_sha256: str
    def __init__(self, message_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., kind: _Optional[str] = ..., body: _Optional[_Union[MessageBody, _Mapping]] = ..., body_sha256: _Optional[str] = ...) -> None: ...

class CreateSnapshotRequest(_message.Message):
    __slots__ = ("conversation_id", "message_ids")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    message_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, conversation_id: _Optional[str] = ..., message_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateSnapshotResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: ContextSnapshot
    def __init__(self, snapshot: _Optional[_Union[ContextSnapshot, _Mapping]] = ...) -> None: ...

class ListSnapshotMessagesRequest(_message.Message):
    __slots__ = ("snapshot_id", "page_size", "page_token")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    page_size: int
    page_token: str
    def __init__(self, snapshot_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSnapshotMessagesResponse(_message.Message):
    __slots__ = ("messages", "next_page_token")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    next_page_token: str
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListSnapshotMessageIdsRequest(_message.Message):
    __slots__ = ("snapshot_id", "page_size", "page_token")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    page_size: int
    page_token: str
    def __init__(self, snapshot_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSnapshotMessageIdsResponse(_message.Message):
    __slots__ = ("message_ids", "next_page_token")
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    message_ids: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, message_ids: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListConversationMessageIdsRequest(_message.Message):
    __slots__ = ("conversation_id", "page_size", "page_token")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    page_size: int
    page_token: str
    def __init__(self, conversation_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListConversationMessageIdsResponse(_message.Message):
    __slots__ = ("message_ids", "next_page_token")
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    message_ids: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, message_ids: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
