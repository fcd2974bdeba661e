"""The gRPC face of the checkpoint store, agentstate.v1.CheckpointsService:
decode, call CheckpointService, encode. Served on the same port as the
other services through the same call path (dispatch.py): the same token
scopes, errors, logs and metrics. Its calls name no conversation, so they
answer with no x-conversation-version; their log lines name the thread.

Every write is idempotent by itself, so an idempotency key is taken (as
dispatch gives every write one) and not kept.

To serve another method, add its handler to `routes`.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from agent_state_client._gen import checkpoints_pb2 as kpb

from ..checkpoints import (
    BlobInput,
    ChannelValueInput,
    CheckpointInput,
    CheckpointService,
    CheckpointTuple,
    ValueInput,
    WriteInput,
)
from ..idempotency import Idempotency
from ..model import Value
from . import dispatch

SERVICE = kpb.DESCRIPTOR.services_by_name["CheckpointsService"]
SERVICE_NAME = SERVICE.full_name


def _value_input(value: kpb.Value) -> ValueInput:
    return ValueInput([BlobInput(item.type, item.data) for item in value.items], value.is_list)


def _value(value: Value) -> kpb.Value:
    return kpb.Value(
        items=[kpb.Blob(type=blob.type, data=blob.data) for blob in value.items],
        is_list=value.is_list,
    )


def _tuple(found: CheckpointTuple) -> kpb.CheckpointTuple:
    key = found.key
    kind, data = found.checkpoint
    return kpb.CheckpointTuple(
        thread_id=key.thread_id,
        checkpoint_ns=key.checkpoint_ns,
        checkpoint_id=key.checkpoint_id,
        parent_checkpoint_id=found.parent_id or "",
        checkpoint=kpb.Blob(type=kind, data=data),
        metadata_json=found.metadata_json,
        values=[
            kpb.ChannelValue(channel=channel, version=version, value=_value(value))
            for channel, version, value in found.values
        ],
        pending_writes=[
            kpb.PendingWrite(
                task_id=write.task_id,
                task_path=write.task_path,
                idx=write.idx,
                channel=write.channel,
                value=_value(write.value),
            )
            for write in found.pending_writes
        ],
    )


def _tuples(found: Iterable[CheckpointTuple]) -> list[kpb.CheckpointTuple]:
    return [_tuple(checkpoint) for checkpoint in found]


class CheckpointsServicer:
    def __init__(self, service: CheckpointService) -> None:
        self._service = service

    def routes(self) -> dict[str, dispatch.Route]:
        """The methods served, by name; the others answer UNIMPLEMENTED."""
        return {
            "PutCheckpoint": dispatch.Route(self.put_checkpoint, write=True),
            "PutWrites": dispatch.Route(self.put_writes, write=True),
            "GetCheckpoint": dispatch.Route(self.get_checkpoint),
            "ListCheckpoints": dispatch.Route(self.list_checkpoints),
            "DeleteThread": dispatch.Route(self.delete_thread, write=True),
            "CopyThread": dispatch.Route(self.copy_thread, write=True),
            "Prune": dispatch.Route(self.prune, write=True),
            "DeleteForRuns": dispatch.Route(self.delete_for_runs, write=True),
        }

    async def put_checkpoint(
        self, request: kpb.PutCheckpointRequest, key: Idempotency | None
    ) -> kpb.PutCheckpointResponse:
        await self._service.put_checkpoint(
            CheckpointInput(
                thread_id=request.thread_id,
                checkpoint_ns=request.checkpoint_ns,
                checkpoint_id=request.checkpoint_id,
                parent_checkpoint_id=request.parent_checkpoint_id,
                checkpoint=BlobInput(request.checkpoint.type, request.checkpoint.data),
                metadata_json=request.metadata_json,
                channel_versions=dict(request.channel_versions),
                values=[
                    ChannelValueInput(value.channel, value.version, _value_input(value.value))
                    for value in request.values
                ],
            )
        )
        return kpb.PutCheckpointResponse()

    async def put_writes(
        self, request: kpb.PutWritesRequest, key: Idempotency | None
    ) -> kpb.PutWritesResponse:
        await self._service.put_writes(
            request.thread_id,
            request.checkpoint_ns,
            request.checkpoint_id,
            request.task_id,
            request.task_path,
            [
                WriteInput(write.idx, write.channel, _value_input(write.value))
                for write in request.writes
            ],
        )
        return kpb.PutWritesResponse()

    async def get_checkpoint(self, request: kpb.GetCheckpointRequest) -> kpb.GetCheckpointResponse:
        found = await self._service.get_checkpoint(
            request.thread_id, request.checkpoint_ns, request.checkpoint_id
        )
        return kpb.GetCheckpointResponse(checkpoint=_tuple(found))

    async def list_checkpoints(
        self, request: kpb.ListCheckpointsRequest
    ) -> kpb.ListCheckpointsResponse:
        page = await self._service.list_checkpoints(
            request.thread_id,
            request.checkpoint_ns if request.HasField("checkpoint_ns") else None,
            request.before_checkpoint_id,
            request.metadata_filter_json,
            request.page_size,
            request.page_token,
        )
        return kpb.ListCheckpointsResponse(
            checkpoints=_tuples(page.checkpoints), next_page_token=page.next_page_token
        )

    async def delete_thread(
        self, request: kpb.DeleteThreadRequest, key: Idempotency | None
    ) -> kpb.DeleteThreadResponse:
        deleted = await self._service.delete_thread(request.thread_id)
        return kpb.DeleteThreadResponse(deleted_checkpoint_count=deleted)

    async def copy_thread(
        self, request: kpb.CopyThreadRequest, key: Idempotency | None
    ) -> kpb.CopyThreadResponse:
        copied = await self._service.copy_thread(request.source_thread_id, request.target_thread_id)
        return kpb.CopyThreadResponse(copied_checkpoint_count=copied)

    async def prune(self, request: kpb.PruneRequest, key: Idempotency | None) -> kpb.PruneResponse:
        deleted = await self._service.prune(list(request.thread_ids), request.strategy)
        return kpb.PruneResponse(deleted_checkpoint_count=deleted)

    async def delete_for_runs(
        self, request: kpb.DeleteForRunsRequest, key: Idempotency | None
    ) -> kpb.DeleteForRunsResponse:
        deleted = await self._service.delete_for_runs(list(request.run_ids))
        return kpb.DeleteForRunsResponse(deleted_checkpoint_count=deleted)


def register(server: grpc.aio.Server, servicer: CheckpointsServicer, edge: dispatch.Edge) -> None:
    """Serve CheckpointsService's methods that `servicer` routes on `server`."""
    dispatch.register(server, SERVICE, servicer.routes(), edge)
