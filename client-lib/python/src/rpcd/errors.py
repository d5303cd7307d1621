"""The exceptions of the rpcd client: one class per protocol error code, plus connection errors.

Every exception the package raises for a failed request is an :class:`RpcdError`. The
daemon's error codes (``docs/ipc-protocol.md`` §7) each have their own subclass with the
code in ``.code``; :func:`error_for` builds the right one from a ``failed`` or ``fatal``
frame. A code this version does not know becomes a plain :class:`RpcdError` carrying it,
so a newer daemon never breaks the client.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class RpcdError(Exception):
    """Base of every error this package raises.

    ``code`` is the protocol's error code (``"unknown_function"``...), or ``None`` for
    errors of the connection itself. ``message`` is the daemon's (or handler's) text.
    ``outcome_unknown`` is true when the call may have run although no reply came: retry
    only idempotent functions.
    """

    code: Optional[str] = None
    outcome_unknown: bool = False

    def __init__(self, message: str = "", code: Optional[str] = None):
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(f"{self.code}: {message}" if self.code else message)


class UnknownFunctionError(RpcdError):
    """No app on the target daemon has registered the function."""

    code = "unknown_function"


class PeerUnreachableError(RpcdError):
    """The target daemon did not answer within the retry/keepalive bound (outcome unknown)."""

    code = "peer_unreachable"
    outcome_unknown = True


class PeerRestartedError(RpcdError):
    """The target daemon restarted while the call was in flight (outcome unknown)."""

    code = "peer_restarted"
    outcome_unknown = True


class DeadlineExceededError(RpcdError):
    """The deadline passed before a reply arrived (outcome unknown)."""

    code = "deadline_exceeded"
    outcome_unknown = True


class MessageTooLargeError(RpcdError):
    """The arguments, the reply or a frame exceed the size limit."""

    code = "message_too_large"


class ServerAppGoneError(RpcdError):
    """The serving app disconnected before answering (outcome unknown)."""

    code = "server_app_gone"
    outcome_unknown = True


class OverloadedError(RpcdError):
    """A bound on calls, connections or registrations was reached; retry later."""

    code = "overloaded"


class BadRequestError(RpcdError):
    """Well-formed but unacceptable: a bad target, a bad function name, bad arguments."""

    code = "bad_request"


class NameTakenError(RpcdError):
    """Another live connection owns the name, it is reserved, or held for its previous owner."""

    code = "name_taken"


class NotOwnerError(RpcdError):
    """Unregistering a name this connection does not own."""

    code = "not_owner"


class AppError(RpcdError):
    """The handler returned an error; ``message`` is the handler's message."""

    code = "app_error"


class ShuttingDownError(RpcdError):
    """The daemon is stopping: the call was refused or failed at the end of its grace."""

    code = "shutting_down"
    outcome_unknown = True


class AccessDeniedError(RpcdError):
    """The daemon's ``[access]`` policy does not allow this request; it did nothing."""

    code = "access_denied"


class ProtocolError(RpcdError):
    """A protocol violation (sent by the daemon in ``fatal`` before it closes)."""

    code = "protocol_error"


class VersionMismatchError(RpcdError):
    """The daemon does not speak this client's protocol version."""

    code = "version_mismatch"


class CancelledError(RpcdError):
    """The caller cancelled the call (``cancel_call``); the handler may have run (outcome
    unknown). Not :class:`concurrent.futures.CancelledError`: the daemon ended the call."""

    code = "cancelled"
    outcome_unknown = True


# The code → class table, in the order of the protocol's error table.
ERROR_CLASSES: Dict[str, Type[RpcdError]] = {
    cls.code: cls  # type: ignore[misc]
    for cls in (
        UnknownFunctionError,
        PeerUnreachableError,
        PeerRestartedError,
        DeadlineExceededError,
        MessageTooLargeError,
        ServerAppGoneError,
        OverloadedError,
        BadRequestError,
        NameTakenError,
        NotOwnerError,
        AppError,
        ShuttingDownError,
        AccessDeniedError,
        ProtocolError,
        VersionMismatchError,
        CancelledError,
    )
}

# Codes a serving app may use to refuse work (``outcome: {"refused": ...}``).
REFUSAL_CODES = ("overloaded", "bad_request", "server_app_gone")


def error_for(code: str, message: str) -> RpcdError:
    """The exception for a ``failed``/``fatal`` frame's ``code`` and ``message``."""
    cls = ERROR_CLASSES.get(code)
    if cls is None:
        return RpcdError(message, code=code)
    return cls(message)


class RpcdConnectionError(RpcdError):
    """Base of the errors of the connection to the local daemon (``code`` is ``None``)."""


class DaemonNotRunningError(RpcdConnectionError):
    """Nothing listens on the socket: no file there, or the connection was refused."""


class ConnectionClosedError(RpcdConnectionError):
    """The connection to the daemon closed (or was closed) while a request waited.

    A call that was in flight may have run (``outcome_unknown``). If the daemon closed the
    connection with a ``fatal`` frame, ``fatal`` holds that error (e.g. a
    :class:`ProtocolError`); otherwise it is ``None``.
    """

    outcome_unknown = True

    def __init__(self, message: str = "", fatal: Optional[RpcdError] = None):
        super().__init__(message)
        self.fatal = fatal


class ProtocolViolationError(RpcdConnectionError):
    """The daemon sent something this client cannot decode; the connection was closed."""
