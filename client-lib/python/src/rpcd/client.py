"""The connection to the local daemon: handshake, requests multiplexed by id, a reader thread.

One :class:`Client` is one Unix-socket connection. Any number of threads may call through it
at once: each request takes the next id, registers a future under it and writes its frame
under a lock; one reader thread decodes the daemon's frames and completes the future whose
id the reply carries (replies come in any order). Invocations for a serving app go to its
:class:`rpcd.Server`. When the connection ends, every request still waiting fails at once
with :class:`ConnectionClosedError`.
"""

from __future__ import annotations

import datetime
import itertools
import math
import os
import socket as _socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from . import protocol
from .errors import (
    ConnectionClosedError,
    DaemonNotRunningError,
    MessageTooLargeError,
    ProtocolViolationError,
    RpcdConnectionError,
    RpcdError,
    VersionMismatchError,
    error_for,
)
from .protocol import FRAME_MAX_DEFAULT, PROTOCOL_VERSION, encode_frame, field

Deadline = Union[None, float, int, datetime.timedelta]

# Space for the fields of a `call` frame around its arguments; a call whose frame would
# pass the frame maximum is refused before anything is sent.
_CALL_OVERHEAD_MAX = 1024


@dataclass(frozen=True)
class DaemonInfo:
    """What the daemon said in ``hello_ok``."""

    version: int
    """The protocol version the daemon speaks."""
    daemon: str
    """The daemon's name and version, e.g. ``"rpcd 0.1.0"``."""
    listen: str
    """The daemon's UDP address, ``host:port``: the target for calls to this daemon."""
    epoch: int
    """Random at each daemon start: a changed epoch means the daemon restarted."""
    extra: Dict[str, Any] = dc_field(default_factory=dict)
    """Fields of ``hello_ok`` this client does not know (from a newer daemon)."""


class CallFuture(Future):
    """The future of a call started with :meth:`Client.submit` (or :meth:`Client.submit_raw`).

    :meth:`cancel` asks the daemon to cancel the call (``cancel_call``): the daemon ends it
    at once, frees its slot and tells the serving app, and the future then fails with
    :class:`rpcd.CancelledError` (outcome unknown: the handler may have run). Unlike a plain
    :class:`concurrent.futures.Future`, it does not enter the ``cancelled`` state itself:
    the daemon's answer settles it, so a call that ended first keeps its result.
    """

    def __init__(self, client: "Client"):
        super().__init__()
        self._client = client
        self.request_id: Optional[int] = None
        """The ``id`` of the ``call`` request on its connection."""

    def cancel(self) -> bool:
        """Sends ``cancel_call`` for the call; False when it has already ended here."""
        if self.done() or self.request_id is None:
            return False
        self._client._cancel_call(self.request_id)
        return True


class Client:
    """A connection to the local rpcd.

    ``socket`` is the daemon's socket path (default: :func:`rpcd.default_socket_path`);
    ``name`` identifies this app in the daemon's logs and stats. The constructor connects
    and completes the handshake; it raises :class:`DaemonNotRunningError` when nothing
    listens there, :class:`RpcdConnectionError` for other connection problems, and the
    error of a ``fatal`` frame (e.g. :class:`VersionMismatchError`, or
    :class:`OverloadedError` from a daemon at its connection limit).

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        socket: Optional[Union[str, os.PathLike]] = None,
        name: Optional[str] = None,
        connect_timeout: float = 10.0,
    ):
        self.path = os.fspath(socket) if socket is not None else protocol.default_socket_path()
        self.name = name or f"python-{os.getpid()}"
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards _pending, _closed, _fatal, _ids
        self._send_lock = threading.Lock()
        self._pending: Dict[int, Tuple[Future, str, Callable[[Dict[str, Any]], Any]]] = {}
        self._closed = False
        self._fatal: Optional[RpcdError] = None
        self._close_reason = "the connection is closed"
        self._closed_event = threading.Event()
        self._invoke_sink: Optional[Any] = None  # the Server, once one attaches
        self._server: Optional[Any] = None  # the one register() creates
        self._reader = protocol.FrameReader()
        self._sock = self._connect(connect_timeout)
        try:
            self.daemon = self._handshake(connect_timeout)
        except BaseException:
            self._sock.close()
            raise
        self._sock.settimeout(None)
        self._thread = threading.Thread(
            target=self._read_loop, name=f"rpcd-reader-{self.path}", daemon=True
        )
        self._thread.start()

    # ----------------------------------------------------------------- public API

    def call(
        self,
        target: Optional[str],
        function: str,
        args: Any = (),
        deadline: Deadline = None,
        idempotent: bool = False,
    ) -> Any:
        """Calls ``function`` on ``target`` and returns its decoded reply.

        ``args`` is MessagePack-encoded as one value; by the stub generator's convention it
        is the list (or tuple) of the function's arguments, so ``client.call(t, "kv.put",
        ["k", "v"])`` calls a Rust ``fn put(key, value)``. ``target`` is a daemon's
        ``host:port``, a service name from the daemon's configuration, or ``None`` for the
        local daemon. ``deadline`` is a time budget in seconds (or a ``timedelta``);
        ``None`` takes the daemon's default. ``idempotent`` lets the daemon retry the call
        on another daemon of a service. Raises the :class:`RpcdError` subclass of the
        failure's code (:class:`AppError` when the handler failed).
        """
        return protocol.unpack_value(
            self.call_raw(target, function, protocol.pack_value(args), deadline, idempotent)
        )

    def call_raw(
        self,
        target: Optional[str],
        function: str,
        args: bytes,
        deadline: Deadline = None,
        idempotent: bool = False,
    ) -> bytes:
        """:meth:`call` with the arguments and reply as raw bytes (no MessagePack)."""
        return self.submit_raw(target, function, args, deadline, idempotent).result()

    def submit(
        self,
        target: Optional[str],
        function: str,
        args: Any = (),
        deadline: Deadline = None,
        idempotent: bool = False,
    ) -> "Future[Any]":
        """Starts :meth:`call` and returns at once: a future of the decoded reply, whose
        :meth:`CallFuture.cancel` cancels the call."""
        raw = self.submit_raw(target, function, protocol.pack_value(args), deadline, idempotent)
        decoded = CallFuture(self)
        decoded.request_id = raw.request_id

        def done(f: "Future[bytes]") -> None:
            err = f.exception()
            if err is not None:
                decoded.set_exception(err)
                return
            try:
                decoded.set_result(protocol.unpack_value(f.result()))
            except Exception as decode_err:  # not MessagePack: the caller should know
                decoded.set_exception(decode_err)

        raw.add_done_callback(done)
        return decoded

    def submit_raw(
        self,
        target: Optional[str],
        function: str,
        args: bytes,
        deadline: Deadline = None,
        idempotent: bool = False,
    ) -> CallFuture:
        """Starts :meth:`call_raw` and returns at once: a future of the reply bytes."""
        if not isinstance(args, (bytes, bytearray, memoryview)):
            raise TypeError("args must be bytes (use call() to encode a value)")
        if len(args) + _CALL_OVERHEAD_MAX > self.frame_max:
            raise MessageTooLargeError(
                f"arguments of {len(args)} bytes do not fit in a frame of {self.frame_max}"
            )
        return self._request(
            "call",
            "call_ok",
            lambda m: field(m, "data", bytes),
            future=CallFuture(self),
            target=self.daemon.listen if target is None else str(target),
            function=function,
            args=bytes(args),
            deadline_ms=_deadline_ms(deadline),
            idempotent=bool(idempotent),
        )

    def ping(self) -> None:
        """Checks that the daemon itself answers (``ping``/``pong``)."""
        self._request("ping", "pong", lambda m: None).result()

    def list(self) -> List[str]:
        """The functions registered on the local daemon, built-ins included, sorted."""
        return self._request("list", "list", _functions).result()

    def stats(self) -> Dict[str, Any]:
        """The daemon's counters (``docs/ipc-protocol.md`` §8) as a dict."""
        return self._request("stats", "stats", lambda m: field(m, "stats", dict)).result()

    def register(self, name: str, handler: Callable[..., Any], **options: Any) -> None:
        """Serves ``name`` with ``handler`` on this connection (see :meth:`Server.register`).

        The first call creates a :class:`rpcd.Server` with default options, stopped by
        :meth:`close`; for other options create the ``Server`` yourself.
        """
        if self._server is None:
            from .server import Server

            self._server = Server(self)
        self._server.register(name, handler, **options)

    def unregister(self, name: str) -> None:
        """Releases ``name``; :class:`NotOwnerError` if this connection does not own it."""
        if self._server is not None and self._server.serves(name):
            self._server.unregister(name)
        else:
            self._register_request("unregister", name)

    def wait_closed(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the connection ends (or ``timeout`` seconds); true if it ended."""
        return self._closed_event.wait(timeout)

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed_event.is_set()

    @property
    def frame_max(self) -> int:
        """The largest frame the daemon accepts (its advertised limit, else the default)."""
        limits = self.daemon.extra.get("limits")
        if isinstance(limits, dict) and isinstance(limits.get("frame_max"), int):
            return int(limits["frame_max"])
        return FRAME_MAX_DEFAULT

    def close(self) -> None:
        """Closes the connection: waiting requests fail, registered names are released."""
        if self._server is not None:
            self._server.stop(wait=False)
        self._shutdown("the client closed the connection")
        if self._thread is not threading.current_thread():
            self._thread.join()
            self._sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<rpcd.Client {self.path} {state} daemon={self.daemon.listen}>"

    # ------------------------------------------------------------ for the Server

    def _attach(self, sink: Any) -> None:
        with self._lock:
            if self._invoke_sink is not None and self._invoke_sink is not sink:
                raise RuntimeError("this connection already has a Server")
            self._invoke_sink = sink

    def _register_request(self, op: str, name: str) -> None:
        self._request(op, "done", lambda m: None, function=name).result()

    def _send_result(self, invocation: int, outcome: Dict[str, Any]) -> None:
        frame = encode_frame("result", invocation=invocation, outcome=outcome)
        if len(frame) - 4 > self.frame_max:
            frame = encode_frame(
                "result",
                invocation=invocation,
                outcome={"error": f"the reply of {len(frame)} bytes exceeds the frame maximum"},
            )
        try:
            self._send(frame)
        except ConnectionClosedError:
            pass  # the daemon already failed the call with server_app_gone

    # ------------------------------------------------------------------ internals

    def _connect(self, timeout: float) -> _socket.socket:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            sock.close()
            raise DaemonNotRunningError(f"is rpcd running? tried {self.path}: {err}") from err
        except OSError as err:
            sock.close()
            raise RpcdConnectionError(f"cannot talk to rpcd at {self.path}: {err}") from err
        return sock

    def _handshake(self, timeout: float) -> DaemonInfo:
        self._send(encode_frame("hello", id=0, version=PROTOCOL_VERSION, name=self.name))
        until = time.monotonic() + timeout
        while True:
            self._sock.settimeout(max(0.001, until - time.monotonic()))
            try:
                data = self._sock.recv(65536)
            except _socket.timeout as err:
                raise RpcdConnectionError(
                    f"rpcd at {self.path} did not answer hello within {timeout} s"
                ) from err
            except OSError as err:
                raise RpcdConnectionError(f"cannot talk to rpcd at {self.path}: {err}") from err
            if not data:
                raise ConnectionClosedError(f"rpcd at {self.path} closed the connection at hello")
            for message in self._reader.feed(data):
                op = message["op"]
                if op == "fatal":
                    raise _fatal_error(message)
                if op == "failed":
                    raise error_for(field(message, "code", str), field(message, "message", str))
                if op != "hello_ok":
                    raise ProtocolViolationError(f"expected hello_ok from rpcd, got {op!r}")
                known = ("op", "id", "version", "daemon", "listen", "epoch")
                info = DaemonInfo(
                    version=field(message, "version", int),
                    daemon=field(message, "daemon", str),
                    listen=field(message, "listen", str),
                    epoch=field(message, "epoch", int),
                    extra={k: v for k, v in message.items() if k not in known},
                )
                if info.version != PROTOCOL_VERSION:
                    raise VersionMismatchError(
                        f"rpcd speaks protocol version {info.version}, this client {PROTOCOL_VERSION}"
                    )
                limits = info.extra.get("limits")
                if isinstance(limits, dict) and isinstance(limits.get("frame_max"), int):
                    self._reader.frame_max = max(FRAME_MAX_DEFAULT, limits["frame_max"])
                return info

    def _request(
        self,
        op: str,
        reply_op: str,
        extract: Callable[[Dict[str, Any]], Any],
        future: Optional[Future] = None,
        **fields: Any,
    ) -> Any:
        future = Future() if future is None else future
        with self._lock:
            if self._closed:
                raise ConnectionClosedError(self._close_reason, self._fatal)
            request_id = next(self._ids)
            self._pending[request_id] = (future, reply_op, extract)
        if isinstance(future, CallFuture):
            future.request_id = request_id
        try:
            self._send(encode_frame(op, id=request_id, **fields))
        except BaseException:
            with self._lock:
                self._pending.pop(request_id, None)
            raise
        return future

    def _cancel_call(self, request_id: int) -> None:
        """Sends ``cancel_call``; on a closed connection the call has failed already."""
        try:
            self._send(encode_frame("cancel_call", id=request_id))
        except ConnectionClosedError:
            pass

    def _send(self, frame: bytes) -> None:
        try:
            with self._send_lock:
                self._sock.sendall(frame)
        except OSError as err:
            self._shutdown(f"writing to rpcd at {self.path} failed: {err}")
            raise ConnectionClosedError(self._close_reason, self._fatal) from err

    def _read_loop(self) -> None:
        reason = f"rpcd at {self.path} closed the connection"
        try:
            while True:
                try:
                    data = self._sock.recv(1 << 16)
                except OSError as err:
                    if not self._closed:
                        reason = f"reading from rpcd at {self.path} failed: {err}"
                    break
                if not data:
                    break
                for message in self._reader.feed(data):
                    self._dispatch(message)
        except ProtocolViolationError as err:
            reason = str(err)
        finally:
            if self._fatal is not None:
                reason = f"rpcd closed the connection: {self._fatal}"
            self._shutdown(reason)
            sink = self._invoke_sink
            if sink is not None:
                sink._connection_closed()
            self._closed_event.set()

    def _dispatch(self, message: Dict[str, Any]) -> None:
        op = message["op"]
        if op == "invoke":
            sink = self._invoke_sink
            if sink is not None:
                sink._invoke(message)
            else:
                self._send_result(
                    field(message, "invocation", int),
                    {"error": "this connection serves no functions"},
                )
            return
        if op == "cancel":
            sink = self._invoke_sink
            if sink is not None:
                sink._cancel(field(message, "invocation", int))
            return
        if op == "fatal":
            self._fatal = _fatal_error(message)
            return
        request_id = message.get("id")
        if not isinstance(request_id, int):
            return  # an unsolicited frame this version does not know: ignored
        with self._lock:
            entry = self._pending.pop(request_id, None)
        if entry is None:
            return  # nobody waits for it any more
        future, reply_op, extract = entry
        try:
            if op == "failed":
                future.set_exception(
                    error_for(field(message, "code", str), field(message, "message", str))
                )
            elif op == reply_op:
                future.set_result(extract(message))
            else:
                future.set_exception(
                    ProtocolViolationError(f"expected {reply_op!r} from rpcd, got {op!r}")
                )
        except ProtocolViolationError as err:
            future.set_exception(err)

    def _shutdown(self, reason: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_reason = reason
            pending, self._pending = self._pending, {}
        try:
            self._sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        for future, _, _ in pending.values():
            future.set_exception(ConnectionClosedError(reason, self._fatal))

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None and not getattr(self, "_closed", True):
            try:
                sock.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass


def _fatal_error(message: Dict[str, Any]) -> RpcdError:
    return error_for(field(message, "code", str), field(message, "message", str))


def _functions(message: Dict[str, Any]) -> List[str]:
    names = field(message, "functions", list)
    if not all(isinstance(n, str) for n in names):
        raise ProtocolViolationError("the daemon's list holds a name that is not a string")
    return names


def _deadline_ms(deadline: Deadline) -> Optional[int]:
    if deadline is None:
        return None
    if isinstance(deadline, datetime.timedelta):
        seconds = deadline.total_seconds()
    else:
        seconds = float(deadline)
    if seconds < 0 or math.isnan(seconds):
        raise ValueError(f"a deadline must be a non-negative number of seconds, not {deadline!r}")
    if math.isinf(seconds):
        return 2**64 - 1  # the daemon caps it at limits.deadline_max_ms
    return min(math.ceil(seconds * 1000), 2**64 - 1)
