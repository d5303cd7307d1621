"""The daemon's own requests: ping, list, stats, and the built-in functions."""

import rpcd
from conftest import Daemon


def test_ping_list_stats_and_builtins(daemon: Daemon):
    with daemon.client() as c:
        assert c.daemon.listen == daemon.listen
        assert c.daemon.daemon.startswith("rpcd ")
        assert c.daemon.version == rpcd.PROTOCOL_VERSION
        assert c.ping() is None
        functions = c.list()
        assert functions == sorted(functions)
        for builtin in ("rpcd.echo", "rpcd.list", "rpcd.names", "rpcd.ping", "rpcd.stats"):
            assert builtin in functions
        stats = c.stats()
        assert stats["epoch"] == c.daemon.epoch
        assert stats["listen"] == daemon.listen
        assert stats["connections"] >= 1
        assert c.call(None, "rpcd.ping") == "pong"
        assert c.call(daemon.listen, "rpcd.ping") == "pong"
        assert c.call_raw(None, "rpcd.echo", b"\x92\x01\x02") == b"\x92\x01\x02"
        assert c.call(None, "rpcd.echo", {"a": [1, b"\x00\xff", None]}) == {
            "a": [1, b"\x00\xff", None]
        }
        assert c.call(None, "rpcd.list") == c.list()
        assert c.call(None, "rpcd.stats")["epoch"] == c.daemon.epoch
        # The calls above were counted by outcome.
        assert c.stats()["calls"].get("ok", 0) >= 5
