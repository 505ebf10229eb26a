"""Port blocks for stand-ins that run side by side: each test process reserves an offset no other holds.

A stand-in listens on the fixed ports of `harness.local.stand_in.Ports`, shifted by an offset. The offsets
here are chosen so that no two shifted sets share a port, and all stay below the kernel's ephemeral range
(where `free_port` picks). An offset is held by an exclusive lock on a file of its own: the kernel releases
it when the holder ends, however it ends, so a killed test run leaves nothing reserved.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.local.stand_in import Ports
from harness.util.net import accepts

LOCKS = Path("/tmp/harness-test-ports")
EPHEMERAL_START = 32768


def ports_of(offset: int) -> set[int]:
    """Every port a stand-in shifted by `offset` listens on."""
    shifted = Ports().offset(offset)
    return {shifted.db_primary, shifted.db_standby, *shifted.tasks, *shifted.admin, shifted.http, shifted.https,
            shifted.stats}


def _offsets() -> list[int]:
    """Offsets (from 300: a developer's own stand-in keeps the defaults) whose port sets are pairwise disjoint."""
    chosen: list[int] = []
    used: set[int] = set()
    for offset in range(300, EPHEMERAL_START, 100):
        ports = ports_of(offset)
        if max(ports) < EPHEMERAL_START and not ports & used:
            chosen.append(offset)
            used |= ports
    return chosen


OFFSETS = _offsets()


@contextmanager
def port_offset() -> Iterator[int]:
    """An offset whose ports no other holder has and nothing listens on, held until the block ends."""
    LOCKS.mkdir(exist_ok=True)
    for offset in OFFSETS:
        fd = os.open(LOCKS / f"offset-{offset}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if any(accepts(port, timeout_s=0.2) for port in ports_of(offset)):  # someone else's server, unlocked
            os.close(fd)
            continue
        try:
            yield offset
        finally:
            os.close(fd)
        return
    raise RuntimeError(f"every stand-in port block is taken ({len(OFFSETS)} of them, locks in {LOCKS})")
