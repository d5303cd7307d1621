"""Each error code raised as its own exception class, for the condition that produces it."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import rpcd
from rpcd import client as client_module
from rpcd.protocol import encode_frame
from conftest import PACKAGE_ROOT, Processes, clean_env


def test_every_code_has_its_class():
    codes = [
        "unknown_function", "peer_unreachable", "peer_restarted", "deadline_exceeded",
        "message_too_large", "server_app_gone", "overloaded", "bad_request", "name_taken",
        "not_owner", "app_error", "shutting_down", "access_denied", "protocol_error",
        "version_mismatch", "cancelled",
    ]
    assert list(rpcd.ERROR_CLASSES) == codes
    for code in codes:
        err = rpcd.error_for(code, "why")
        assert type(err) is rpcd.ERROR_CLASSES[code] and isinstance(err, rpcd.RpcdError)
        assert (err.code, err.message, str(err)) == (code, "why", f"{code}: why")
    unknown = rpcd.error_for("from_the_future", "m")
    assert type(unknown) is rpcd.RpcdError and unknown.code == "from_the_future"
    assert rpcd.DeadlineExceededError.outcome_unknown and not rpcd.AppError.outcome_unknown
    assert rpcd.CancelledError.outcome_unknown


def test_unknown_function_bad_target_and_app_error(daemon):
    with daemon.client() as c:
        with pytest.raises(rpcd.UnknownFunctionError) as err:
            c.call(None, "no.such.function")
        assert err.value.code == "unknown_function"
        with pytest.raises(rpcd.BadRequestError):
            c.call("not-a-configured-name", "rpcd.ping")

        def boom():
            raise RuntimeError("it broke")

        c.register("py.boom", boom)
        with pytest.raises(rpcd.AppError) as err:
            c.call(None, "py.boom")
        assert err.value.message == "it broke"
        # A handler may refuse with a refusal code instead.
        def refuse():
            raise rpcd.OverloadedError("try later")

        c.register("py.refuse", refuse)
        with pytest.raises(rpcd.OverloadedError) as err:
            c.call(None, "py.refuse")
        assert err.value.message == "try later"


def test_name_taken_and_not_owner(daemon):
    with daemon.client("one") as one, daemon.client("two") as two:
        one.register("py.mine", lambda: 1)
        with pytest.raises(rpcd.NameTakenError):
            two.register("py.mine", lambda: 2)
        with pytest.raises(rpcd.NameTakenError):
            two.register("rpcd.reserved", lambda: 2)
        with pytest.raises(rpcd.NotOwnerError):
            two.unregister("py.mine")
        assert two.call(None, "py.mine") == 1
        one.unregister("py.mine")
        two.register("py.mine", lambda: 2)
        assert one.call(None, "py.mine") == 2


def test_deadline_exceeded_and_cancel_reaches_the_handler(daemon):
    """A call whose handler outlives its deadline fails with deadline_exceeded; a caller that
    disconnects cancels its invocation, and the handler sees it."""
    started = threading.Event()
    seen_cancel = threading.Event()

    def wait_for_cancel(request):
        started.set()
        if request.cancelled.wait(20):
            seen_cancel.set()

    release = threading.Event()
    with daemon.client("server") as s, rpcd.Server(s, workers=4) as server:
        server.register("py.sleep", lambda: release.wait(20))
        server.register("py.wait_cancel", wait_for_cancel, with_request=True)
        with daemon.client("caller") as c:
            t0 = time.monotonic()
            with pytest.raises(rpcd.DeadlineExceededError) as err:
                c.call(None, "py.sleep", deadline=0.2)
            assert err.value.outcome_unknown
            assert time.monotonic() - t0 < 10
            release.set()
        caller = daemon.client("caller-2")
        future = caller.submit(None, "py.wait_cancel", deadline=30)
        assert started.wait(20)
        caller.close()
        with pytest.raises(rpcd.ConnectionClosedError):
            future.result(timeout=5)
        assert seen_cancel.wait(20), "the handler never saw the cancel"


def test_peer_unreachable(procs: Processes):
    """A call to a UDP port where nobody answers fails with peer_unreachable."""
    d = procs.daemon("[transport]\npeer_timeout_ms = 300\nkeepalive_interval_ms = 100\n")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        target = "127.0.0.1:%d" % silent.getsockname()[1]
        with d.client() as c:
            with pytest.raises(rpcd.PeerUnreachableError) as err:
                c.call(target, "rpcd.ping", deadline=20)
            assert err.value.outcome_unknown
    finally:
        silent.close()


def test_message_too_large(procs: Processes):
    """Arguments over transport.message_max are refused by the daemon; over the frame
    maximum, by the client before anything is sent."""
    a, b = procs.daemon("[transport]\nmessage_max = 4096\n"), procs.daemon()
    with a.client() as c:
        with pytest.raises(rpcd.MessageTooLargeError):
            c.call_raw(b.listen, "rpcd.echo", b"x" * 8192)
        assert c.call_raw(b.listen, "rpcd.echo", b"\xc4\x01x") == b"\xc4\x01x"
        with pytest.raises(rpcd.MessageTooLargeError):
            c.call_raw(b.listen, "rpcd.echo", bytes(rpcd.FRAME_MAX_DEFAULT))
        c.ping()  # the connection survived


def test_overloaded_when_the_worker_queue_is_full(daemon):
    """With one worker and no queue, a second invocation while the first runs is refused."""
    release = threading.Event()
    running = threading.Event()

    def hold():
        running.set()
        release.wait(20)
        return "done"

    with daemon.client("server") as s, rpcd.Server(s, workers=1, queue_max=0) as server:
        server.register("py.hold", hold)
        with daemon.client("caller") as c:
            first = c.submit(None, "py.hold", deadline=30)
            assert running.wait(20)
            with pytest.raises(rpcd.OverloadedError):
                c.call(None, "py.hold", deadline=30)
            release.set()
            assert first.result(timeout=20) == "done"


SERVER_SCRIPT = """
import sys, threading, rpcd
c = rpcd.Client(sys.argv[1], name="doomed")
c.register("py.forever", lambda: threading.Event().wait(60))
print("ready", flush=True)
c.wait_closed()
"""


def test_server_app_gone(procs: Processes, daemon):
    """The serving app (a Python process) dies while a call waits for it."""
    server = procs.spawn(
        [sys.executable, "-c", SERVER_SCRIPT, daemon.socket],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(PYTHONPATH=PACKAGE_ROOT),
    )
    assert server.stdout.readline().strip() == "ready"
    with daemon.client() as c:
        future = c.submit(None, "py.forever", deadline=30)
        time.sleep(0.1)  # let the invoke reach the server (any order still fails the call)
        os.kill(server.pid, signal.SIGKILL)
        with pytest.raises(rpcd.ServerAppGoneError):
            future.result(timeout=20)


def test_shutting_down(procs: Processes):
    """A call still pending when the daemon's shutdown grace ends fails with shutting_down."""
    d = procs.daemon("[limits]\nshutdown_grace_ms = 300\n")
    release = threading.Event()
    running = threading.Event()

    def hold():
        running.set()
        release.wait(20)

    with d.client("server") as s, d.client("caller") as c:
        s.register("py.hold", hold)
        future = c.submit(None, "py.hold", deadline=30)
        assert running.wait(20)
        d.proc.send_signal(signal.SIGTERM)
        with pytest.raises(rpcd.ShuttingDownError) as err:
            future.result(timeout=20)
        assert err.value.outcome_unknown
        release.set()
        assert d.proc.wait(20) == 0


def test_access_denied(procs: Processes):
    d = procs.daemon(
        '[[access.allow]]\nusers = ["*"]\ncall = ["rpcd.*", "ok.*"]\nregister = ["ok.*"]\n'
    )
    with d.client() as c:
        c.register("ok.one", lambda: 1)
        assert c.call(None, "ok.one") == 1
        with pytest.raises(rpcd.AccessDeniedError):
            c.register("no.one", lambda: 1)
        with pytest.raises(rpcd.AccessDeniedError):
            c.call(None, "no.one")
        with pytest.raises(rpcd.AccessDeniedError):
            c.stats()


def test_protocol_error_fails_what_waits(daemon):
    """A frame the daemon cannot accept gets fatal protocol_error; the client fails every
    waiting request with ConnectionClosedError carrying it."""
    release = threading.Event()
    with daemon.client("server") as s:
        s.register("py.hold", lambda: release.wait(20))
        with daemon.client("bad") as c:
            future = c.submit(None, "py.hold", deadline=30)
            c._send(encode_frame("no_such_op", id=12345))
            with pytest.raises(rpcd.ConnectionClosedError) as err:
                future.result(timeout=20)
            assert isinstance(err.value.fatal, rpcd.ProtocolError)
            assert c.wait_closed(5)
            with pytest.raises(rpcd.ConnectionClosedError):
                c.ping()
        release.set()
        s.ping()  # other connections are unaffected


def test_version_mismatch(daemon, monkeypatch):
    monkeypatch.setattr(client_module, "PROTOCOL_VERSION", 99)
    with pytest.raises(rpcd.VersionMismatchError):
        rpcd.Client(daemon.socket)


def test_no_daemon(tmp_path, monkeypatch):
    path = str(tmp_path / "nobody.sock")
    with pytest.raises(rpcd.DaemonNotRunningError) as err:
        rpcd.Client(path)
    assert f"is rpcd running? tried {path}" in str(err.value)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)  # a file nobody listens on: refused
    try:
        monkeypatch.setenv("RPCD_SOCKET", path)
        assert rpcd.default_socket_path() == path
        with pytest.raises(rpcd.DaemonNotRunningError):
            rpcd.Client()
    finally:
        listener.close()


def test_socket_path_rules(monkeypatch):
    monkeypatch.delenv("RPCD_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    if os.geteuid() == 0:
        assert rpcd.default_socket_path() == "/run/rpcd/rpcd.sock"
    else:
        assert rpcd.default_socket_path() == "/run/user/4242/rpcd/rpcd.sock"
        monkeypatch.setenv("XDG_RUNTIME_DIR", "")
        assert rpcd.default_socket_path() == f"/tmp/rpcd-{os.geteuid()}/rpcd.sock"
    monkeypatch.setenv("RPCD_SOCKET", "")
    assert rpcd.default_socket_path() != ""


def test_peer_restarted(procs: Processes):
    """The serving daemon is killed and restarted on the same port while a call waits on it:
    the caller's daemon sees the new epoch and fails the call with peer_restarted."""
    a, b = procs.daemon(), procs.daemon()
    started, ended = threading.Event(), threading.Event()

    def until_cancelled(request):
        started.set()
        if request.cancelled.wait(30):  # set when the connection to the killed daemon ends
            ended.set()

    with b.client("server") as s:
        s.register("py.forever", until_cancelled, with_request=True)
        with a.client("caller") as c:
            future = c.submit(b.listen, "py.forever", deadline=60)
            assert started.wait(20)
            b.proc.kill()
            b.proc.wait()
            assert ended.wait(10), "the handler was not told its connection ended"
            procs.daemon(listen=b.listen)
            with pytest.raises(rpcd.PeerRestartedError) as err:
                future.result(timeout=30)
            assert err.value.outcome_unknown
