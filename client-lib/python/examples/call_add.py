"""Calls `py.add` and `py.divide` (see serve_add.py) on TARGET through the local rpcd.

    python3 call_add.py TARGET [SOCKET]
"""

import sys

import rpcd


def main() -> int:
    target = sys.argv[1]
    socket = sys.argv[2] if len(sys.argv) > 2 else None
    with rpcd.Client(socket, name="call_add") as client:
        print("2 + 3 =", client.call(target, "py.add", [2, 3], deadline=2.0))
        try:
            client.call(target, "py.divide", [1, 0], deadline=2.0)
        except rpcd.AppError as err:
            print("1 / 0 failed:", err.message)
        except rpcd.RpcdError as err:  # unreachable, deadline, unknown function...
            print(f"call failed ({err.code}): {err.message}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
