"""An in-process engine: the ``ClientApp`` runs in this process, message after message.

Flower's simulation engine starts Ray and one actor per core, which costs seconds and memory;
this engine runs the very same ``ServerApp`` and ``ClientApp`` through a ``Grid`` whose
``send_and_receive`` calls the client app directly, each client with its own node state. For
tests and for machines where Ray cannot start (``greentune federate --engine inline``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class InlineGrid:
    """The part of Flower's ``Grid`` a server uses: node ids, send and receive."""

    def __init__(self, client_app: Any, n: int, node_config: dict[str, Any] | None = None):
        from flwr.app import Context, RecordDict

        self.app = client_app
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                node_config={"partition-id": i, "num-partitions": n, **(node_config or {})},
                state=RecordDict(),
                run_config={},
            )
            for i, node in enumerate(range(101, 101 + n))
        }
        self.sent: list[Any] = []
        """Every message sent (tests read what travelled)."""
        self.received: list[Any] = []

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Any], *, timeout: float | None = None
    ) -> Iterable[Any]:
        from flwr.app import Error, Message
        from flwr.common.serde import message_from_proto, message_to_proto

        def wire(m: Any) -> Any:
            """What the other side gets: a copy through Flower's wire format, never the sender's
            object (messages that share one RecordDict, or a client app that edits what it
            received, must not leak into another delivery)."""
            return message_from_proto(message_to_proto(m))

        replies = []
        for msg in messages:
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            delivered = wire(msg)
            try:
                reply = self.app(delivered, self.contexts[node])
            except Exception as exc:  # as Flower does: the failure travels as an error reply
                reason = f"{type(exc).__name__}: {exc}"
                reply = Message(Error(code=0, reason=reason), reply_to=delivered)
            reply = wire(reply)
            self.received.append(reply)
            replies.append(reply)
        return replies


def run_inline(server_app: Any, client_app: Any, n: int) -> InlineGrid:
    """Run ``server_app`` against ``n`` clients in this process; returns the grid."""
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    grid = InlineGrid(client_app, n)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    server_app(grid, context)
    return grid
