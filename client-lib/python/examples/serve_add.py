"""Serves `py.add` and `py.divide` through the local rpcd until interrupted.

    python3 serve_add.py [SOCKET]

Then, from anywhere: `rpcctl call <this daemon's host:port> py.add 2 3`.
"""

import signal
import sys

import rpcd


def add(a, b):
    return a + b


def divide(a, b):
    if b == 0:
        raise ValueError("division by zero")  # the caller gets rpcd.AppError
    return a / b


def main() -> None:
    socket = sys.argv[1] if len(sys.argv) > 1 else None
    with rpcd.Client(socket, name="serve_add") as client, rpcd.Server(client, workers=4) as server:
        server.register("py.add", add)
        server.register("py.divide", divide)
        print(f"serve_add: serving py.add, py.divide at {client.daemon.listen}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: client.close())
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
