"""Many threads calling through one connection; handlers running in parallel."""

import random
import threading
import time

import rpcd
from conftest import Processes


def test_threads_share_one_connection(procs: Processes):
    """Calls from 16 threads on one connection each get their own reply, to a Python server
    that answers out of order (random delays) on another daemon."""
    a, b = procs.daemon(), procs.daemon()

    def slow_echo(thread, i):
        time.sleep(random.random() / 200)
        return [thread, i, "x" * (i % 7)]

    with b.client("server") as s, rpcd.Server(s, workers=8) as server, a.client("caller") as c:
        server.register("py.slow_echo", slow_echo)
        errors = []

        def worker(t):
            try:
                for i in range(40):
                    reply = c.call(b.listen, "py.slow_echo", [t, i], deadline=10)
                    assert reply == [t, i, "x" * (i % 7)], reply
            except BaseException as err:  # reported by the main thread
                errors.append(err)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        # The same, started all at once from one thread with futures.
        futures = [c.submit(b.listen, "py.slow_echo", [99, i]) for i in range(200)]
        assert [f.result(timeout=30) for f in futures] == [
            [99, i, "x" * (i % 7)] for i in range(200)
        ]


def test_handlers_run_in_parallel_on_the_pool(daemon):
    """Four invocations meet at a barrier: they only return if the pool runs them at once,
    and their replies come back to four waiting callers."""
    barrier = threading.Barrier(4, timeout=20)

    def meet(i):
        barrier.wait()
        return i * 10

    with daemon.client("server") as s, rpcd.Server(s, workers=4) as server:
        server.register("py.meet", meet)
        with daemon.client("caller") as c:
            futures = [c.submit(None, "py.meet", [i], deadline=30) for i in range(4)]
            assert sorted(f.result(timeout=30) for f in futures) == [0, 10, 20, 30]
