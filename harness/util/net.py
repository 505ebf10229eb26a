"""Ports on loopback: one that is free now, and whether one accepts connections."""
from __future__ import annotations

import socket
from collections.abc import Collection


def free_port(exclude: Collection[int] = ()) -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice), not one of `exclude`."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in exclude:
            return port


def accepts(port: int, host: str = "127.0.0.1", timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections on `host`:`port` within `timeout_s`."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True
