"""Cancelling a call from Python: ``Client.submit(...).cancel()`` sends ``cancel_call``; the
call fails with ``CancelledError``, the serving handler sees ``request.cancelled``, and the
slots it held are free at once (one call per connection, one invocation per app)."""

import threading

import pytest

import rpcd

TIGHT = "[limits]\ncalls_per_connection_max = 1\ninvocations_per_app_max = 1\n"


def serve_blocking(client, seen):
    server = rpcd.Server(client, workers=2)

    def block(request):
        seen.append("started")
        started.set()
        seen.append(request.cancelled.wait(20))
        finished.set()
        return "finished"

    started, finished = threading.Event(), threading.Event()
    server.register("py.block", block, with_request=True)
    server.register("py.quick", lambda n: n + 1)
    return server, started, finished


@pytest.mark.parametrize("remote", [False, True])
def test_cancel_reaches_the_handler_and_frees_the_slots(procs, remote):
    caller_daemon = procs.daemon(TIGHT)
    serving_daemon = procs.daemon(TIGHT) if remote else caller_daemon
    seen = []
    with serving_daemon.client("server") as sc, caller_daemon.client("caller") as c:
        server, started, finished = serve_blocking(sc, seen)
        target = serving_daemon.listen
        for _ in range(2):
            seen.clear()
            started.clear()
            finished.clear()
            future = c.submit(target, "py.block", [], deadline=30)
            assert started.wait(20)
            assert isinstance(future, rpcd.CallFuture)
            assert future.cancel() is True
            with pytest.raises(rpcd.CancelledError) as err:
                future.result(20)
            assert err.value.code == "cancelled" and err.value.outcome_unknown
            assert finished.wait(20)
            assert seen == ["started", True]
            assert c.call(target, "py.quick", [41], deadline=20) == 42
        server.stop()


def test_cancel_after_the_end_keeps_the_result(daemon):
    with daemon.client("server") as sc, daemon.client("caller") as c:
        server = rpcd.Server(sc)
        server.register("py.quick", lambda n: n + 1)
        future = c.submit(None, "py.quick", [1], deadline=20)
        assert future.result(20) == 2
        assert future.cancel() is False
        # A cancel_call for a call that ended is ignored: no reply, the connection stays.
        c._cancel_call(future.request_id)
        c.ping()
        assert c.call(None, "py.quick", [2], deadline=20) == 3
        server.stop()
