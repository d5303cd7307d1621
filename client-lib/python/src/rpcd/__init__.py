"""A Python client for rpcd, the reliable-transport RPC daemon.

Talks to the local ``rpcd`` over its Unix socket (``docs/ipc-protocol.md``)::

    import rpcd

    with rpcd.Client() as client:
        client.call("10.0.0.2:7400", "kv.put", ["k", "v"], deadline=0.5)

    with rpcd.Client() as client, rpcd.Server(client) as server:
        server.register("py.add", lambda a, b: a + b)
        server.serve_forever()

Arguments and replies are MessagePack; every protocol error code is its own exception
class, a subclass of :class:`RpcdError` with ``.code``.
"""

from .client import CallFuture, Client, DaemonInfo
from .errors import (
    ERROR_CLASSES,
    AccessDeniedError,
    AppError,
    BadRequestError,
    CancelledError,
    ConnectionClosedError,
    DaemonNotRunningError,
    DeadlineExceededError,
    MessageTooLargeError,
    NameTakenError,
    NotOwnerError,
    OverloadedError,
    PeerRestartedError,
    PeerUnreachableError,
    ProtocolError,
    ProtocolViolationError,
    RpcdConnectionError,
    RpcdError,
    ServerAppGoneError,
    ShuttingDownError,
    UnknownFunctionError,
    VersionMismatchError,
    error_for,
)
from .protocol import FRAME_MAX_DEFAULT, PROTOCOL_VERSION, default_socket_path
from .server import QUEUE_MAX_DEFAULT, Request, Server

__version__ = "0.1.0"

__all__ = [
    "Client",
    "CallFuture",
    "DaemonInfo",
    "Server",
    "Request",
    "default_socket_path",
    "PROTOCOL_VERSION",
    "FRAME_MAX_DEFAULT",
    "QUEUE_MAX_DEFAULT",
    "ERROR_CLASSES",
    "error_for",
    "RpcdError",
    "RpcdConnectionError",
    "DaemonNotRunningError",
    "ConnectionClosedError",
    "ProtocolViolationError",
    "UnknownFunctionError",
    "PeerUnreachableError",
    "PeerRestartedError",
    "DeadlineExceededError",
    "MessageTooLargeError",
    "ServerAppGoneError",
    "OverloadedError",
    "BadRequestError",
    "NameTakenError",
    "NotOwnerError",
    "AppError",
    "ShuttingDownError",
    "AccessDeniedError",
    "ProtocolError",
    "VersionMismatchError",
    "CancelledError",
]
