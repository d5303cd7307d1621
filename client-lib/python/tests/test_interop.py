"""Python and Rust apps calling each other through real daemons."""

import json
import subprocess
import threading

import pytest

import rpcd
from conftest import Processes, binary, rpcctl, run


def test_python_calls_rust_kv_server_through_two_daemons(procs: Processes):
    """A Python client on daemon A calls the Rust `kv_server` example served on daemon B,
    with the stub generator's argument convention (the argument tuple as an array)."""
    a, b = procs.daemon(), procs.daemon()
    procs.kv_server(b)
    with a.client() as c:
        assert c.call(b.listen, "kv.put", ["k", "v1"], deadline=5) is None
        assert c.call(b.listen, "kv.put", ("k", "v2"), deadline=5) == "v1"
        assert c.call(b.listen, "kv.get", ["k"]) == "v2"
        assert c.call(b.listen, "kv.get", ["missing"]) is None
        assert c.call(b.listen, "kv.incr", ["n"]) == 1
        assert c.call(b.listen, "kv.incr", ["n"], idempotent=True) == 2
        with pytest.raises(rpcd.AppError) as err:
            c.call(b.listen, "kv.incr", ["k"])
        assert err.value.code == "app_error"
        assert err.value.message == 'the value of "k" is not an integer'
        # Arguments the Rust handler cannot decode are refused, not run.
        with pytest.raises(rpcd.BadRequestError):
            c.call(b.listen, "kv.get", [1, 2, 3])
        assert c.call(b.listen, "kv.delete", ["k"]) is True
        assert c.call(b.listen, "kv.delete", ["k"]) is False


def add(a, b):
    return a + b


def fail(text):
    raise ValueError(f"cannot do {text}")


def test_python_server_called_by_rpcctl(daemon):
    """`rpcctl call` (JSON arguments, an array on the wire) reaches a Python handler."""
    with daemon.client("py-server") as c, rpcd.Server(c, workers=2) as server:
        server.register("py.add", add)
        server.register("py.fail", fail)
        server.register("py.echo_request", lambda req, *a: [req.peer, req.caller, list(a)],
                        with_request=True)
        out = rpcctl(daemon, "call", daemon.listen, "py.add", "2", "40", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == 42
        out = rpcctl(daemon, "call", daemon.listen, "py.add", '"ab"', '"cd"', "--json")
        assert json.loads(out.stdout) == "abcd"
        out = rpcctl(daemon, "call", daemon.listen, "py.echo_request", "1", "--json")
        assert json.loads(out.stdout) == ["local", "local", [1]]
        # A handler's exception is an application error: status 5, its message printed.
        out = rpcctl(daemon, "call", daemon.listen, "py.fail", '"x"')
        assert out.returncode == 5, (out.stdout, out.stderr)
        assert "app_error: cannot do x" in out.stderr
        # Arguments that do not fit the handler are refused as bad_request: status 4.
        out = rpcctl(daemon, "call", daemon.listen, "py.add", "1")
        assert out.returncode == 4, (out.stdout, out.stderr)
        assert "bad_request" in out.stderr
        listed = rpcctl(daemon, "list", "--json")
        assert {"py.add", "py.fail"} <= set(json.loads(listed.stdout))


class PyKv:
    """The kv service of client-lib/examples/kv_service in Python."""

    def __init__(self):
        self.map = {}
        self.lock = threading.Lock()

    def put(self, key, value):
        with self.lock:
            previous = self.map.get(key)
            self.map[key] = value
            return previous

    def get(self, key):
        with self.lock:
            return self.map.get(key)

    def delete(self, key):
        with self.lock:
            return self.map.pop(key, None) is not None

    def incr(self, key):
        with self.lock:
            text = self.map.get(key, "0")
            try:
                value = int(text) + 1
            except ValueError:
                raise ValueError(f"the value of {key!r} is not an integer") from None
            self.map[key] = str(value)
            return value


def test_rust_stub_calls_python_through_two_daemons(procs: Processes):
    """The Rust `kv_client` example (the generated stub) on daemon A calls a Python
    implementation of the kv service served on daemon B."""
    a, b = procs.daemon(), procs.daemon()
    kv = PyKv()
    with b.client("py-kv") as c:
        for name in ("put", "get", "delete", "incr"):
            c.register(f"kv.{name}", getattr(kv, name))
        client = binary("examples/kv_client")

        def kv_client(*args):
            out = run([client, "--socket", a.socket, b.listen, *args])
            return out.returncode, out.stdout.strip(), out.stderr.strip()

        assert kv_client("put", "k", "v") == (0, "(none)", "")
        assert kv_client("put", "k", "w") == (0, "v", "")
        assert kv_client("get", "k") == (0, "w", "")
        assert kv_client("incr", "n") == (0, "1", "")
        assert kv_client("incr", "n") == (0, "2", "")
        assert kv_client("delete", "k") == (0, "true", "")
        kv.map["bad"] = "x"
        code, _, err = kv_client("incr", "bad")
        assert code == 1 and "the value of 'bad' is not an integer" in err, err
        # The demo (no verb) exercises every function; it must succeed end to end.
        code, out, err = kv_client()
        assert code == 0, err


def test_examples_run(procs: Processes):
    """The README's examples: serve_add.py on one daemon, call_add.py through another."""
    import os
    import sys

    from conftest import PACKAGE_ROOT, clean_env

    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    a, b = procs.daemon(), procs.daemon()
    server = procs.spawn(
        [sys.executable, os.path.join(examples, "serve_add.py"), b.socket],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(PYTHONPATH=PACKAGE_ROOT),
    )
    assert server.stdout.readline().startswith(f"serve_add: serving py.add, py.divide at {b.listen}")
    out = run([sys.executable, os.path.join(examples, "call_add.py"), b.listen, a.socket],
              env_extra={"PYTHONPATH": PACKAGE_ROOT})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "2 + 3 = 5\n1 / 0 failed: division by zero\n"
    server.terminate()
    assert server.wait(10) == 0
