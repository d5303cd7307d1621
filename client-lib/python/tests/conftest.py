"""Fixtures: real rpcd daemons (and Rust example apps) started per test, killed by pid.

The binaries come from ``$RPCD_BIN_DIR`` (default ``<repo>/target/debug``): ``rpcd``,
``rpcctl`` and the examples ``kv_server`` and ``kv_client`` in ``examples/``. Build them
with ``cargo build -p rpcd -p rpcctl -p rpcd-client --bins --examples``; without them the
tests skip, saying which is missing (they fail instead with ``RPCD_REQUIRE_BINARIES=1``). Every daemon gets a temp dir, an empty config (so the
system's is never read), ``127.0.0.1:0`` and its own socket.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
try:
    import rpcd  # the installed package (CI installs it with pip)
except ImportError:  # not installed: the source tree
    sys.path.insert(0, str(HERE.parent / "src"))
    import rpcd

#: The directory holding the imported package, for Python apps the tests start.
PACKAGE_ROOT = str(Path(rpcd.__file__).resolve().parent.parent)

REPO = HERE.parents[2]
BIN_DIR = Path(os.environ.get("RPCD_BIN_DIR") or REPO / "target" / "debug")


def binary(name: str) -> Path:
    """Path of a workspace binary or example; skips the test when it is not built."""
    path = BIN_DIR / name
    if not path.is_file():
        why = (
            f"{path} is missing: build it with `cargo build -p rpcd -p rpcctl -p rpcd-client "
            "--bins --examples` (or set RPCD_BIN_DIR)"
        )
        if os.environ.get("RPCD_REQUIRE_BINARIES") == "1":
            pytest.fail(why)  # CI: a missing binary is a failure, not a skip
        pytest.skip(why)
    return path


def clean_env(**extra: str) -> Dict[str, str]:
    """This process's environment without the variables that change rpcd or its clients."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RPCD_", "LISTEN_"))
        and k not in ("NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY", "RUST_LOG")
    }
    env.update(extra)
    return env


class Daemon:
    """A running rpcd: its process, socket path and UDP address (``listen``)."""

    def __init__(self, proc: subprocess.Popen, socket: Path, log: Path, listen: str):
        self.proc = proc
        self.socket = str(socket)
        self.log = log
        self.listen = listen

    def client(self, name: str = "pytest") -> rpcd.Client:
        return rpcd.Client(self.socket, name=name)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class Processes:
    """Starts processes and kills every one of them by pid at the end of the test."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: List[subprocess.Popen] = []
        self.count = 0

    def spawn(self, args: List[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen([str(a) for a in args], **kwargs)
        self.procs.append(proc)
        return proc

    def daemon(self, config: str = "", listen: str = "127.0.0.1:0") -> Daemon:
        self.count += 1
        name = f"d{self.count}"
        cfg = self.tmp / f"{name}.toml"
        cfg.write_text(config)
        socket = self.tmp / f"{name}.sock"
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as logf:
            proc = self.spawn(
                [binary("rpcd"), "--config", cfg, "--listen", listen, "--socket", socket],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=logf,
                env=clean_env(RUST_LOG="info"),
            )
        until = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"rpcd exited early ({proc.returncode}): {log.read_text()}")
            try:
                with rpcd.Client(str(socket), name="harness") as c:
                    return Daemon(proc, socket, log, c.daemon.listen)
            except rpcd.RpcdConnectionError:
                if time.monotonic() > until:
                    raise RuntimeError(f"rpcd did not come up: {log.read_text()}")
                time.sleep(0.01)

    def kv_server(self, daemon: Daemon) -> subprocess.Popen:
        """The Rust `kv_server` example serving through `daemon`, once it says it serves."""
        proc = self.spawn(
            [binary("examples/kv_server"), "--socket", daemon.socket],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("kv_server: serving"), line
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def procs(tmp_path: Path):
    """Start daemons and apps with ``procs.daemon()``/``procs.spawn()``; all killed after."""
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.kill_all()


@pytest.fixture
def daemon(procs: Processes) -> Daemon:
    """One daemon with the default settings."""
    return procs.daemon()


def run(
    args: List[str], timeout: float = 30, env_extra: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess:
    """Runs a command to completion (killed if it outlives ``timeout``)."""
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(**(env_extra or {})),
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    until = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > until:
            return False
        time.sleep(0.01)
    return True


def rpcctl(daemon: Daemon, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return run([binary("rpcctl"), "--socket", daemon.socket, *args], timeout=timeout)


