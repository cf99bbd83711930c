"""Local networking helpers for tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may still
    take it before the caller binds it: callers that start servers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# A host name whose lookup the ``hung_resolver`` unit fixture (tests/unit/conftest.py)
# blocks in the C resolver call, as a DNS server that drops queries does.
HUNG_HOST = "prometheus.hung-resolver.invalid"
