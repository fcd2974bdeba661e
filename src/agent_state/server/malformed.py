"""Requests whose bytes do not parse, and which string field made them fail.

protobuf refuses a string field whose bytes are not UTF-8 without saying
which field it was. To name it, the request is parsed again as a *lenient*
twin of its type: the same messages with every string field declared as
bytes and maps as lists of their entries (built once per type, in a
descriptor pool of its own), which parses whenever the only fault is the
text. Then the parsed fields are walked
and the first string that does not decode is named by its path, like
``state_updates[2].set_json``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import cast

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from ..errors import InvalidArgument


class Malformed:
    """Stands for a request whose bytes did not parse: names the string
    field whose bytes are not UTF-8, when that is why."""

    def __init__(self, type_name: str, bad_text: str | None = None) -> None:
        self.type_name = type_name
        self.bad_text = bad_text

    def error(self) -> InvalidArgument:
        if self.bad_text is not None:
            return InvalidArgument(
                self.bad_text, "is not valid UTF-8, so the request does not parse"
            )
        return InvalidArgument("request", f"not a valid {self.type_name} message")


def deserializer(message_type: type[Message]) -> Callable[[bytes], Message | Malformed]:
    """Parses a request of `message_type`, or says why it does not parse."""
    # The runtime's own Descriptor type (upb's), which the stubs tell apart.
    descriptor = cast(Descriptor, message_type.DESCRIPTOR)

    def parse(data: bytes) -> Message | Malformed:
        try:
            return message_type.FromString(data)
        except (DecodeError, RuntimeError, ValueError):
            return Malformed(descriptor.full_name, bad_text(descriptor, data))

    return parse


def bad_text(descriptor: Descriptor, data: bytes) -> str | None:
    """The path of the first string field (in field order) whose bytes are
    not UTF-8; None when there is none or the bytes do not parse at all."""
    try:
        lenient = _lenient_class(descriptor).FromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return None
    return _first_bad(lenient, descriptor, "")


def _first_bad(lenient: Message, descriptor: Descriptor, prefix: str) -> str | None:
    for lenient_field, value in lenient.ListFields():
        field = descriptor.fields_by_name[lenient_field.name]
        name = prefix + field.name
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            # In the twin a map is a list of its entries (see _strings_as_bytes).
            for entry in value:
                if _is_bad(message_type.fields_by_name["key"], entry.key):
                    return name + ".key"
                found = _checked(message_type.fields_by_name["value"], entry.value, name + ".value")
                if found is not None:
                    return found
        elif field.is_repeated:
            for index, item in enumerate(value):
                found = _checked(field, item, f"{name}[{index}]")
                if found is not None:
                    return found
        else:
            found = _checked(field, value, name)
            if found is not None:
                return found
    return None


def _checked(field: FieldDescriptor, value: object, name: str) -> str | None:
    if isinstance(value, Message):
        # The strict type's fields: the lenient twin's strings are bytes.
        assert field.message_type is not None
        return _first_bad(value, field.message_type, name + ".")
    return name if _is_bad(field, value) else None


def _is_bad(field: FieldDescriptor, value: object) -> bool:
    if field.type != FieldDescriptor.TYPE_STRING or not isinstance(value, bytes):
        return False
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@cache
def _lenient_class(descriptor: Descriptor) -> type[Message]:
    pool = descriptor_pool.DescriptorPool()
    _add_lenient(pool, descriptor.file, set())
    return GetMessageClass(pool.FindMessageTypeByName(descriptor.full_name))


def _add_lenient(
    pool: descriptor_pool.DescriptorPool, file: FileDescriptor, added: set[str]
) -> None:
    """Adds `file`, after the files it imports, with its strings as bytes."""
    if file.name in added:
        return
    added.add(file.name)
    for dependency in file.dependencies:
        _add_lenient(pool, dependency, added)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    for message in proto.message_type:
        _strings_as_bytes(message)
    pool.Add(proto)


def _strings_as_bytes(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    for nested in message.nested_type:
        # A map's key cannot be bytes: the twin keeps its entries as a plain
        # list of messages instead.
        nested.options.ClearField("map_entry")
        _strings_as_bytes(nested)
