"""The local protocol's framing and message encoding (``docs/ipc-protocol.md`` §1-§3).

A frame is a big-endian ``u32`` length followed by exactly one MessagePack value, a map
with string keys whose ``"op"`` names the message. Messages are plain dicts here: the
encoder writes ``op`` first, and the decoder returns the whole map, so fields a newer
daemon adds are simply ignored by the code that reads the ones it knows.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Dict, List, Optional, Tuple

import msgpack

from .errors import ProtocolViolationError

#: The protocol version this client speaks (``hello.version``).
PROTOCOL_VERSION = 1

#: The daemon's default frame maximum (16 MiB + 64 KiB, ``limits.frame_max``).
FRAME_MAX_DEFAULT = 16 * 1024 * 1024 + 64 * 1024

_PREFIX = struct.Struct(">I")


def default_socket_path() -> str:
    """Where the daemon's socket is, by the same rule as the daemon and the Rust client.

    ``$RPCD_SOCKET`` if set and non-empty; ``/run/rpcd/rpcd.sock`` for root (effective uid
    0); ``$XDG_RUNTIME_DIR/rpcd/rpcd.sock`` if that is set and non-empty; otherwise
    ``/tmp/rpcd-<euid>/rpcd.sock``.
    """
    env = os.environ.get("RPCD_SOCKET")
    if env:
        return env
    euid = os.geteuid()
    if euid == 0:
        return "/run/rpcd/rpcd.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "rpcd", "rpcd.sock")
    return f"/tmp/rpcd-{euid}/rpcd.sock"


def encode_frame(op: str, **fields: Any) -> bytes:
    """One frame holding the message ``op`` with ``fields`` (``op`` is written first)."""
    message: Dict[str, Any] = {"op": op}
    message.update(fields)
    body = msgpack.packb(message, use_bin_type=True)
    return _PREFIX.pack(len(body)) + body


def pack_value(value: Any) -> bytes:
    """``value`` as MessagePack: bytes as bin, str as str (as rmp-serde does)."""
    return msgpack.packb(value, use_bin_type=True)


def unpack_value(data: bytes) -> Any:
    """One MessagePack value; bin becomes bytes, str becomes str, non-string map keys allowed."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class FrameReader:
    """Splits a byte stream into messages: buffer until a whole frame is there, then decode.

    An incomplete frame is not an error; it waits for more bytes. A length over
    ``frame_max``, a body that is not one MessagePack map with a string ``op``, or trailing
    bytes raise :class:`ProtocolViolationError`.
    """

    def __init__(self, frame_max: int = FRAME_MAX_DEFAULT):
        self.frame_max = frame_max
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[Dict[str, Any]]:
        """Adds ``data`` and returns every message now complete, in order."""
        self._buf += data
        out: List[Dict[str, Any]] = []
        while True:
            message, used = self._next()
            if message is None:
                break
            del self._buf[:used]
            out.append(message)
        return out

    def _next(self) -> Tuple[Optional[Dict[str, Any]], int]:
        if len(self._buf) < _PREFIX.size:
            return None, 0
        (length,) = _PREFIX.unpack_from(self._buf)
        if length > self.frame_max:
            raise ProtocolViolationError(
                f"the daemon sent a frame of {length} bytes, over the maximum of {self.frame_max}"
            )
        end = _PREFIX.size + length
        if len(self._buf) < end:
            return None, 0
        return decode_message(bytes(self._buf[_PREFIX.size : end])), end


def decode_message(body: bytes) -> Dict[str, Any]:
    """The message in one frame's body: a map with a string ``op``."""
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as err:  # msgpack raises several types (ExtraData, ValueError...)
        raise ProtocolViolationError(f"the daemon sent invalid MessagePack: {err}") from err
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolViolationError(
            f"the daemon sent a frame that is not a message map with an op: {message!r:.200}"
        )
    return message


def field(message: Dict[str, Any], name: str, kind: Any) -> Any:
    """``message[name]``, checked to be of ``kind`` (a type or tuple of types)."""
    value = message.get(name)
    # bool is an int in Python; integer fields must not accept true/false.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise ProtocolViolationError(
            f"the daemon's {message.get('op')!r} frame has a bad or missing {name!r}: {value!r:.100}"
        )
    return value


def _kinds(kind: Any) -> Tuple[Any, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
