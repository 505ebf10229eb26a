"""The embedded AWS emulator: moto's server on 127.0.0.1:4566, the port LocalStack clients expect.

Started on demand inside the test process (it stops with the process), or reused when something already
listens on the port, so a long-lived emulator (or LocalStack itself) serves several runs.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlparse

from harness.target import endpoint_listening


@contextmanager
def running_emulator(endpoint_url: str) -> Iterator[bool]:
    """Yield True when this call started the emulator, False when one was already listening."""
    if endpoint_listening(endpoint_url):
        yield False
        return
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per call drowns the report

    url = urlparse(endpoint_url)
    server = ThreadedMotoServer(ip_address=url.hostname or "127.0.0.1", port=url.port or 4566, verbose=False)
    server.start()
    try:
        yield True
    finally:
        server.stop()
