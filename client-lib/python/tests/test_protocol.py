"""Framing and encoding against the literal bytes of docs/ipc-protocol.md §10."""

import pytest

import rpcd
from rpcd.protocol import FrameReader, encode_frame


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace("\n", " "))


HELLO = hexbytes(
    "00 00 00 21 84 a2 6f 70 a5 68 65 6c 6c 6f a2 69 64 01"
    " a7 76 65 72 73 69 6f 6e 01 a4 6e 61 6d 65 a4 64 65 6d 6f"
)
CALL = hexbytes(
    "00 00 00 5b 87 a2 6f 70 a4 63 61 6c 6c a2 69 64 02"
    " a6 74 61 72 67 65 74 ae 31 32 37 2e 30 2e 30 2e 31 3a 37 30 30 31"
    " a8 66 75 6e 63 74 69 6f 6e a9 72 70 63 64 2e 65 63 68 6f"
    " a4 61 72 67 73 c4 03 92 01 02"
    " ab 64 65 61 64 6c 69 6e 65 5f 6d 73 cd 01 f4"
    " aa 69 64 65 6d 70 6f 74 65 6e 74 c2"
)
RESULT = hexbytes(
    "00 00 00 26 83 a2 6f 70 a6 72 65 73 75 6c 74"
    " aa 69 6e 76 6f 63 61 74 69 6f 6e 09"
    " a7 6f 75 74 63 6f 6d 65 81 a2 6f 6b c4 01 c0"
)
PING = hexbytes("00 00 00 0d 82 a2 6f 70 a4 70 69 6e 67 a2 69 64 07")
INVOKE = hexbytes(
    "00 00 00 5c 87 a2 6f 70 a6 69 6e 76 6f 6b 65"
    " aa 69 6e 76 6f 63 61 74 69 6f 6e 09"
    " a8 66 75 6e 63 74 69 6f 6e a6 6b 76 2e 67 65 74"
    " a4 61 72 67 73 c4 03 91 a1 6b"
    " a6 63 61 6c 6c 65 72 ad 31 30 2e 30 2e 30 2e 32 3a 37 34 30 30"
    " a4 70 65 65 72 a1 62"
    " ab 64 65 61 64 6c 69 6e 65 5f 6d 73 cd 01 f4"
)
FAILED = hexbytes(
    "00 00 00 32 84 a2 6f 70 a6 66 61 69 6c 65 64 a2 69 64 02"
    " a4 63 6f 64 65 b0 75 6e 6b 6e 6f 77 6e 5f 66 75 6e 63 74 69 6f 6e"
    " a7 6d 65 73 73 61 67 65 a4 6e 6f 20 66"
)


def test_encoding_matches_the_documented_bytes():
    assert encode_frame("hello", id=1, version=1, name="demo") == HELLO
    assert (
        encode_frame(
            "call",
            id=2,
            target="127.0.0.1:7001",
            function="rpcd.echo",
            args=b"\x92\x01\x02",
            deadline_ms=500,
            idempotent=False,
        )
        == CALL
    )
    assert encode_frame("result", invocation=9, outcome={"ok": b"\xc0"}) == RESULT
    assert encode_frame("ping", id=7) == PING


def test_decoding_split_and_batched_frames():
    reader = FrameReader()
    stream = INVOKE + FAILED
    messages = []
    for i in range(len(stream)):  # one byte at a time: frames split at every offset
        messages += reader.feed(stream[i : i + 1])
    assert messages == reader.feed(b"") + [
        {
            "op": "invoke",
            "invocation": 9,
            "function": "kv.get",
            "args": b"\x91\xa1\x6b",
            "caller": "10.0.0.2:7400",
            "peer": "b",
            "deadline_ms": 500,
        },
        {"op": "failed", "id": 2, "code": "unknown_function", "message": "no f"},
    ]
    assert [m["op"] for m in FrameReader().feed(stream)] == ["invoke", "failed"]


def test_bad_frames_are_violations():
    with pytest.raises(rpcd.ProtocolViolationError):
        FrameReader(frame_max=16).feed(b"\x00\x00\x00\x11")  # over the maximum, at once
    with pytest.raises(rpcd.ProtocolViolationError):
        FrameReader().feed(PING[:3] + b"\x0e" + PING[4:] + b"\xc0")  # trailing bytes
    with pytest.raises(rpcd.ProtocolViolationError):
        FrameReader().feed(b"\x00\x00\x00\x01\x01")  # not a map


def test_unknown_fields_and_frames_from_a_newer_daemon_are_ignored(tmp_path):
    """A scripted daemon adds fields to hello_ok and pong and sends an unsolicited frame of
    an unknown op: the client keeps the extra hello_ok fields in `extra` and works on."""
    import socket
    import threading

    path = str(tmp_path / "fake.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    seen = []

    def fake_daemon():
        conn, _ = listener.accept()
        reader = FrameReader()
        with conn:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                for m in reader.feed(data):
                    seen.append(m)
                    if m["op"] == "hello":
                        conn.sendall(encode_frame(
                            "hello_ok", id=m["id"], version=1, daemon="rpcd 9.9", listen="127.0.0.1:1",
                            epoch=5, limits={"frame_max": 1 << 20, "future": True}, versions=[1, 3],
                        ))
                    elif m["op"] == "ping":
                        conn.sendall(encode_frame("news_from_the_future", detail=1))
                        conn.sendall(encode_frame("pong", id=m["id"], added=[1, 2]))

    thread = threading.Thread(target=fake_daemon, daemon=True)
    thread.start()
    try:
        with rpcd.Client(path, name="fwd") as c:
            assert c.daemon.daemon == "rpcd 9.9" and c.daemon.epoch == 5
            assert c.daemon.extra == {"limits": {"frame_max": 1 << 20, "future": True},
                                      "versions": [1, 3]}
            assert c.frame_max == 1 << 20
            c.ping()
            c.ping()
        assert [m["op"] for m in seen] == ["hello", "ping", "ping"]
        assert seen[0]["version"] == rpcd.PROTOCOL_VERSION and seen[0]["name"] == "fwd"
    finally:
        listener.close()
        thread.join(5)
