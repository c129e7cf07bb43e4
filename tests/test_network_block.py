"""The conftest blocks the network; prove the block works, so 'tests never touch the network' holds."""
import socket
import urllib.request

import pytest

from conftest import NetworkBlockedError


def test_outbound_connection_is_refused():
    with pytest.raises(NetworkBlockedError):
        socket.create_connection(("example.org", 80), timeout=1)


def test_urllib_is_refused():
    with pytest.raises(Exception) as info:
        urllib.request.urlopen("http://93.184.216.34/", timeout=1)
    assert "must not use the network" in repr(info.value) or isinstance(info.value.__cause__, NetworkBlockedError) \
        or "must not use the network" in str(getattr(info.value, "reason", ""))


def test_loopback_still_works():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=1)
    client.close()
    server.close()
