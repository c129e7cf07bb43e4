"""Test-wide fixtures. Tests never touch the network: every socket connection to a non-loopback
address raises, so a test that forgets a mock fails loudly instead of hanging or downloading."""

import os
import socket

import pytest

# Hub libraries must not even try: set before any test imports them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Tests pin the cpu profile to fp32, so equalities such as "batched = one by one" hold on every CPU;
# tests/test_runtime.py checks the bf16 switch itself.
os.environ.setdefault("TINYRL_CPU_BF16", "0")


class NetworkBlockedError(RuntimeError):
    pass


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if address else ""
    return host in ("localhost", "::1", "") or str(host).startswith("127.")


def _guarded_connect(self, address):
    if not _is_local(address):
        raise NetworkBlockedError(f"tests must not use the network (tried to connect to {address!r})")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(address):
        raise NetworkBlockedError(f"tests must not use the network (tried to connect to {address!r})")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host not in (None, "localhost", "::1") and not str(host).startswith("127."):
        raise NetworkBlockedError(f"tests must not use the network (tried to resolve {host!r})")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _block_network():
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.getaddrinfo = _guarded_getaddrinfo
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex
    socket.getaddrinfo = _real_getaddrinfo


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """One dequantized SmolLM2 cache for the whole session, in a temporary folder (about 20 s to build)."""
    from helpers import models
    folder = os.environ.get("TINYRL_TEST_CACHE") or str(tmp_path_factory.mktemp("tinyrl-cache"))
    old = os.environ.get(models.CACHE_ENV)
    os.environ[models.CACHE_ENV] = folder
    models.smollm2_dir()
    yield folder
    if old is None:
        os.environ.pop(models.CACHE_ENV, None)
    else:
        os.environ[models.CACHE_ENV] = old
