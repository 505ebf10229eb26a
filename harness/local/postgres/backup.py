"""What point-in-time restore starts from, as RDS keeps it: a base backup of the primary (its daily
snapshot) and the WAL archived since, closed on demand so the archive holds every commit so far."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from harness.local.postgres.config import REPLICATION_ROLE, START_TIMEOUT
from harness.local.postgres.replication import Replication
from harness.local.postgres.server import conninfo
from harness.util.wait import WaitTimeout, until


class BaseBackups:
    """The base backup in `backups/` and the WAL archive of the pair `replication` manages."""

    def __init__(self, replication: Replication) -> None:
        self.replication = replication
        self.cluster = replication.cluster
        self.layout = replication.layout

    def take(self) -> dict[str, Any]:
        """See `PostgresPair.take_base_backup()`; the caller holds the pair's lock."""
        primary = self.replication.current_primary()
        if self.cluster.pid(primary) is None:
            raise RuntimeError(f"the primary of the pair in {self.layout.state} is not running: start() it first")
        server, backups, backup_dir = self.cluster.server, self.layout.backups_dir, self.layout.backup_dir
        server.claim(backups)
        temp, old = backups / "base.tmp", backups / "base.old"
        for leftover in (temp, old):
            shutil.rmtree(leftover, ignore_errors=True)
        began = time.monotonic()
        # Its own application_name: pg_basebackup's WAL stream must never pass for the synchronous standby.
        server.tool(
            "pg_basebackup", "-D", str(temp), "-X", "stream", "--checkpoint=fast", "--no-sync", "-w",
            "-d", conninfo(host="127.0.0.1", port=str(self.layout.port(primary)), user=REPLICATION_ROLE,
                           application_name="base_backup"), timeout=START_TIMEOUT)
        taken_at = time.time()  # the copy is consistent from its end on: the earliest point a restore reaches
        start = re.search(r"^START TIMELINE: (\d+)$", (temp / "backup_label").read_text(), re.MULTILINE)
        timeline = int(start.group(1)) if start else None
        if backup_dir.exists():
            os.rename(backup_dir, old)
        os.rename(temp, backup_dir)
        shutil.rmtree(old, ignore_errors=True)
        record = {"taken_at": taken_at, "timeline": timeline, "node": primary}
        written = backups / "base.json.tmp"
        server.write_file(written, json.dumps(record, indent=2) + "\n")
        os.replace(written, backups / "base.json")
        return record | {"dir": str(backup_dir), "seconds": time.monotonic() - began}

    def latest(self) -> dict[str, Any] | None:
        """See `PostgresPair.base_backup()`."""
        try:
            record = json.loads((self.layout.backups_dir / "base.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not (self.layout.backup_dir / "global" / "pg_control").exists():
            return None
        return record

    def switch_wal(self) -> Path:
        """See `PostgresPair.switch_wal()`."""
        primary = self.replication.roles()["primary"]
        if primary is None or self.cluster.pid(primary) is None:
            raise RuntimeError(f"no primary of the pair in {self.layout.state} is running")
        name = self.cluster.psql(primary, "SELECT pg_walfile_name(pg_switch_wal());").strip()
        segment = self.layout.archive_dir / name
        try:
            until(segment.exists, START_TIMEOUT, f"{segment.name} to be archived", poll_s=0.05)
        except WaitTimeout:
            raise RuntimeError(f"{segment.name} was not archived within {START_TIMEOUT:.0f} s\n"
                               f"--- last lines of {self.layout.log_file(primary)} ---\n"
                               f"{self.cluster.log_tail(primary)}") from None
        return segment
