"""Serving functions: register names, run invocations on a thread pool, answer with results.

The client's reader thread hands each ``invoke`` to :meth:`Server._invoke`, which queues it
on a :class:`concurrent.futures.ThreadPoolExecutor` (or refuses it with ``overloaded`` when
``workers + queue_max`` invocations are already outstanding). A worker decodes the
arguments, runs the handler and sends ``result``: the return value as ``{"ok": bytes}``, an
exception as ``{"error": message}`` (the caller gets :class:`rpcd.AppError`), arguments that
do not fit the handler as a ``bad_request`` refusal. A ``cancel`` sets the request's
``cancelled`` event; a cancelled invocation gets no result.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from . import protocol
from .client import Client
from .errors import REFUSAL_CODES, ProtocolViolationError, RpcdError

#: Invocations queued for a free worker before callers get ``overloaded`` (as in Rust).
QUEUE_MAX_DEFAULT = 1024


@dataclass
class Request:
    """One invocation, as a handler registered with ``with_request=True`` sees it."""

    invocation: int
    """The daemon's id for this piece of work."""
    function: str
    """The registered function being run."""
    args: bytes
    """The caller's arguments, unchanged (MessagePack by convention)."""
    caller: str
    """The calling daemon's ``host:port``, or ``"local"`` for an app of this daemon."""
    peer: str
    """Who called: ``"local"``, an authenticated peer's name, or ``""`` if unauthenticated."""
    deadline: float
    """``time.monotonic()`` value at which the caller stops waiting."""
    credentials: Optional[Dict[str, int]] = None
    """For a local caller: its ``{"uid", "gid", "pid"}``; ``None`` for a remote one."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when the daemon cancels the invocation (its caller is gone)."""

    def is_cancelled(self) -> bool:
        """Whether the caller is gone: the result will not be delivered."""
        return self.cancelled.is_set()

    def time_left(self) -> float:
        """Seconds until the caller's deadline (negative once it passed)."""
        return self.deadline - time.monotonic()


@dataclass
class _Function:
    handler: Callable[..., Any]
    raw: bool
    with_request: bool
    signature: Optional[inspect.Signature]


class Server:
    """Serves functions through ``client``'s connection with a pool of ``workers`` threads.

    ``workers`` defaults to the number of CPUs; at most ``queue_max`` invocations wait for
    a free worker, further ones are refused with ``overloaded``. Use it as a context
    manager, or call :meth:`stop`. A connection has at most one ``Server``.
    """

    def __init__(
        self,
        client: Client,
        workers: Optional[int] = None,
        queue_max: int = QUEUE_MAX_DEFAULT,
    ):
        self.client = client
        self.workers = workers or os.cpu_count() or 4
        self.queue_max = queue_max
        self._functions: Dict[str, _Function] = {}
        self._requests: Dict[int, Request] = {}
        self._lock = threading.Lock()
        self._stopped = False
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="rpcd-worker"
        )
        client._attach(self)

    def register(
        self,
        name: str,
        handler: Callable[..., Any],
        *,
        raw: bool = False,
        with_request: bool = False,
    ) -> None:
        """Claims ``name`` on the daemon and serves it with ``handler``.

        By default the arguments are decoded from MessagePack; a list (the stub
        generator's convention) is passed as positional arguments — ``handler(*args)`` — and
        any other value as one argument; the return value is encoded as the reply. With
        ``raw=True`` the handler gets the argument bytes and returns bytes. With
        ``with_request=True`` it gets the :class:`Request` first. Raising an exception fails
        the call with ``app_error`` and ``str(exception)`` as its message; raising
        :class:`rpcd.OverloadedError` or :class:`rpcd.BadRequestError` refuses it with that
        code. Raises :class:`rpcd.NameTakenError` and the like if the daemon refuses.
        """
        try:
            signature: Optional[inspect.Signature] = inspect.signature(handler)
        except (TypeError, ValueError):
            signature = None  # some builtins have none: arguments are not checked
        with self._lock:
            if self._stopped:
                raise RuntimeError("the server is stopped")
            previous = self._functions.get(name)
            # Installed before the daemon knows the name, so the first invoke finds it.
            self._functions[name] = _Function(handler, raw, with_request, signature)
        try:
            self.client._register_request("register", name)
        except BaseException:
            with self._lock:
                if previous is None:
                    self._functions.pop(name, None)
                else:
                    self._functions[name] = previous
            raise

    def unregister(self, name: str) -> None:
        """Releases ``name``; invocations already running still answer."""
        self.client._register_request("unregister", name)
        with self._lock:
            self._functions.pop(name, None)

    def serves(self, name: str) -> bool:
        """Whether this server has a handler for ``name``."""
        with self._lock:
            return name in self._functions

    def serve_forever(self) -> None:
        """Blocks until the connection to the daemon ends (or :meth:`stop` from another thread)."""
        self.client.wait_closed()

    def stop(self, wait: bool = True) -> None:
        """Stops serving: names are released, new invocations are refused with
        ``server_app_gone``; with ``wait`` the running handlers are waited for."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            names = list(self._functions)
        for name in names:
            try:
                self.client._register_request("unregister", name)
            except RpcdError:
                pass  # the connection is gone: the daemon released the names itself
        self._executor.shutdown(wait=wait)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------ called by the reader thread

    def _invoke(self, message: Dict[str, Any]) -> None:
        invocation = protocol.field(message, "invocation", int)
        try:
            request = Request(
                invocation=invocation,
                function=protocol.field(message, "function", str),
                args=protocol.field(message, "args", bytes),
                caller=protocol.field(message, "caller", str),
                peer=str(message.get("peer", "")),
                deadline=time.monotonic() + protocol.field(message, "deadline_ms", int) / 1000.0,
                credentials=_credentials(message.get("credentials")),
            )
        except ProtocolViolationError as err:
            self.client._send_result(invocation, _refused("bad_request", str(err)))
            return
        with self._lock:
            if self._stopped:
                refusal = _refused("server_app_gone", "the app is stopping")
            elif len(self._requests) >= self.workers + self.queue_max:
                refusal = _refused(
                    "overloaded",
                    f"{request.function}: {self.queue_max} invocations already wait "
                    "for a worker",
                )
            else:
                refusal = None
                self._requests[invocation] = request
        if refusal is not None:
            self.client._send_result(invocation, refusal)
            return
        try:
            self._executor.submit(self._run, request)
        except RuntimeError:  # the executor shut down meanwhile
            with self._lock:
                self._requests.pop(invocation, None)
            self.client._send_result(invocation, _refused("server_app_gone", "the app is stopping"))

    def _cancel(self, invocation: int) -> None:
        with self._lock:
            request = self._requests.get(invocation)
        if request is not None:  # unknown: answered already, or never taken
            request.cancelled.set()

    def _connection_closed(self) -> None:
        with self._lock:
            requests = list(self._requests.values())
        for request in requests:
            request.cancelled.set()  # nobody can receive their results any more

    # ------------------------------------------------------------ worker threads

    def _run(self, request: Request) -> None:
        try:
            if request.is_cancelled():
                return
            outcome = self._outcome(request)
            if not request.is_cancelled():
                self.client._send_result(request.invocation, outcome)
        finally:
            with self._lock:
                self._requests.pop(request.invocation, None)

    def _outcome(self, request: Request) -> Dict[str, Any]:
        with self._lock:
            function = self._functions.get(request.function)
        if function is None:
            return {"error": f"{request.function} is not served by this app"}
        lead = (request,) if function.with_request else ()
        if function.raw:
            call_args: tuple = lead + (request.args,)
        else:
            try:
                value = protocol.unpack_value(request.args)
            except Exception as err:
                return _refused(
                    "bad_request", f"{request.function}: cannot decode the arguments: {err}"
                )
            values = tuple(value) if isinstance(value, list) else (value,)
            call_args = lead + values
        if function.signature is not None:
            try:
                function.signature.bind(*call_args)
            except TypeError as err:
                return _refused(
                    "bad_request", f"{request.function}: the arguments do not fit: {err}"
                )
        try:
            result = function.handler(*call_args)
        except RpcdError as err:
            if err.code in REFUSAL_CODES:
                return _refused(err.code, err.message)
            return {"error": err.message or str(err)}
        except Exception as err:
            return {"error": str(err) or type(err).__name__}
        if function.raw:
            if not isinstance(result, (bytes, bytearray, memoryview)):
                return {"error": f"{request.function}: a raw handler must return bytes"}
            return {"ok": bytes(result)}
        try:
            return {"ok": protocol.pack_value(result)}
        except Exception as err:
            return {"error": f"{request.function}: cannot encode the reply: {err}"}


def _refused(code: str, message: str) -> Dict[str, Any]:
    return {"refused": {"code": code, "message": message}}


def _credentials(value: Any) -> Optional[Dict[str, int]]:
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, int)}
