"""Which node is the primary, and keeping the other its synchronous standby: promotion, failover, and the
rebuild of a lost node by pg_rewind or a fresh copy. The caller holds the pair's lock (`Cluster.locked()`)
for every change made here."""
from __future__ import annotations

import shutil
import time
from typing import Any

from harness.local.postgres.cluster import Cluster
from harness.local.postgres.config import COMMAND_TIMEOUT, NODES, REPLICATION_ROLE, STANDBY_NAME, START_TIMEOUT, other
from harness.local.postgres.server import conninfo
from harness.local.postgres.settings import node_settings


class Replication:
    """The roles of the nodes of `cluster`, and the moves between them."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.layout = cluster.layout

    # ---------------------------------------------------------------- roles

    def roles(self) -> dict[str, str | None]:
        """See `PostgresPair.roles()`."""
        valid = [node for node in NODES if self.cluster.valid(node) and node != self._rebuilding()]
        standbys = [node for node in valid if (self.layout.data_dir(node) / "standby.signal").exists()]
        primaries = [node for node in valid if node not in standbys]
        if len(primaries) > 1:
            primaries = [max(primaries, key=self._recency)]
        return {"primary": primaries[0] if primaries else None,
                "standby": standbys[0] if len(standbys) == 1 else None}

    def current_primary(self) -> str:
        primary = self.roles()["primary"]
        if primary is None:
            raise RuntimeError(f"the pair in {self.layout.state} has no primary (both data dirs are standbys, or "
                               f"missing): stop it and remove {self.layout.state} to start a fresh pair")
        return primary

    def healthy(self) -> bool:
        """See `PostgresPair.healthy()`."""
        roles = self.roles()
        primary, standby = roles["primary"], roles["standby"]
        return (primary is not None and standby is not None and self.cluster.pid(primary) is not None
                and self.cluster.pid(standby) is not None and self.cluster.sync_state(primary) == "sync")

    def _rebuilding(self) -> str | None:
        """The node a rebuild was under way on (named before its data dir is touched, removed once it is a
        standby again): whatever its data dir holds, it is not a primary."""
        try:
            return self.layout.rebuilding_file.read_text().strip() or None
        except OSError:
            return None

    def _recency(self, node: str) -> tuple[int, int, int]:
        """What makes one of two primaries the newer: its timeline (a promotion starts a new one, and writes
        its history file at once, before the control file records it at the next checkpoint), then whether it
        runs, then how far its last checkpoint is."""
        timeline, checkpoint = 0, 0
        try:
            control = self.cluster.server.tool("pg_controldata", "-D", str(self.layout.data_dir(node)),
                                               env={"LC_ALL": "C"}, timeout=10)
            fields = dict(line.split(":", 1) for line in control.splitlines() if ":" in line)
            timeline = int(fields["Latest checkpoint's TimeLineID"].strip())
            high, low = fields["Latest checkpoint location"].strip().split("/")
            checkpoint = (int(high, 16) << 32) | int(low, 16)
        except (RuntimeError, KeyError, ValueError):
            pass
        for history in (self.layout.data_dir(node) / "pg_wal").glob("*.history"):
            try:
                timeline = max(timeline, int(history.stem, 16))
            except ValueError:
                continue
        return timeline, int(self.cluster.pid(node) is not None), checkpoint

    def attached(self, node: str) -> bool:
        """Whether the node is a standby as the stand-in made it: standby.signal, and none of the settings
        `break_replication()` overrides (nor any other ALTER SYSTEM) on either node."""
        return (self.cluster.valid(node) and (self.layout.data_dir(node) / "standby.signal").exists()
                and self._rebuilding() is None and not any(self._overridden(n) for n in NODES))

    def _overridden(self, node: str) -> bool:
        """Whether the node's postgresql.auto.conf sets anything (the stand-in leaves it empty)."""
        try:
            text = (self.layout.data_dir(node) / "postgresql.auto.conf").read_text()
        except OSError:
            return False
        return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())

    # ---------------------------------------------------------------- moves

    def promote(self, node: str) -> None:
        self.cluster.server.tool("pg_ctl", "promote", "-D", str(self.layout.data_dir(node)), "-w",
                                 "-t", str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 5)

    def fail_over(self) -> dict[str, Any]:
        """See `PostgresPair.fail_over()`."""
        roles = self.roles()
        old, new = roles["primary"], roles["standby"]
        if old is None or new is None or self.cluster.pid(new) is None:
            raise RuntimeError(f"the pair in {self.layout.state} has no running standby to fail over to "
                               f"(roles {roles}): run rebuild_standby() or start() first")
        killed_at = self.cluster.kill(old)
        self.promote(new)
        return {"old_primary": old, "new_primary": new, "killed_at": killed_at, "promoted_at": time.time()}

    def break_replication(self) -> None:
        """See `PostgresPair.break_replication()`."""
        roles = self.roles()
        primary, standby = roles["primary"], roles["standby"]
        if primary is None or standby is None or not (self.cluster.pid(primary) and self.cluster.pid(standby)):
            raise RuntimeError(f"both nodes of the pair in {self.layout.state} must run to break replication")
        self.cluster.psql(primary, "ALTER SYSTEM SET synchronous_standby_names = '';\nSELECT pg_reload_conf();\n")
        self.cluster.wait_until(lambda: self.cluster.sync_state(primary) != "sync",
                                "the primary to stop waiting for its standby", primary)
        self.cluster.psql(standby, "ALTER SYSTEM SET primary_conninfo = '';\n"
                                   "ALTER SYSTEM SET restore_command = '';\nSELECT pg_reload_conf();\n")
        self.cluster.wait_until(lambda: not self._replicating(primary, standby), "the standby to stop receiving WAL",
                                standby)

    def _replicating(self, primary: str, standby: str) -> bool:
        """Whether the standby still has a WAL receiver, or the primary a WAL sender for it."""
        try:
            sender = self.cluster.psql(primary, "SELECT count(*) FROM pg_stat_replication "
                                                f"WHERE application_name = '{STANDBY_NAME}';").strip()
            receiver = self.cluster.psql(standby, "SELECT count(*) FROM pg_stat_wal_receiver;").strip()
        except RuntimeError:
            return True
        return sender != "0" or receiver != "0"

    def rebuild(self, primary: str, standby: str) -> dict[str, Any]:
        """Make `standby` the synchronous standby of `primary` (see `PostgresPair.rebuild_standby()`)."""
        began = time.monotonic()
        if self.attached(standby) and self.healthy():
            return {"standby": standby, "method": None, "seconds": 0.0}
        cluster = self.cluster
        cluster.start_node(primary)
        # Until its new standby streams, the primary acknowledges commits alone, as after a failover: a
        # synchronous name with no standby behind it would hang every commit for the rebuild's length.
        cluster.write_conf(primary, node_settings(self.layout, primary, "primary", sync=False))
        cluster.psql(primary, "ALTER SYSTEM RESET ALL;\nSELECT pg_reload_conf();\n")
        # Named before anything in its data dir changes, so an interrupted rebuild never makes it a primary.
        self.layout.rebuilding_file.write_text(standby + "\n")
        cluster.stop_node(standby)
        cluster.clear_stale_locks(standby)
        if cluster.valid(standby) and (self.layout.data_dir(standby) / "standby.signal").exists():
            method = "reattach"  # still a standby of this primary (on its timeline): nothing diverged
        else:
            method = "pg_rewind"
            try:
                self._rewind(standby, primary)
            except RuntimeError:
                method = "base_backup"
                self.clone(standby, primary)
        self.make_standby(standby)
        self.layout.rebuilding_file.unlink(missing_ok=True)
        cluster.start_node(standby)
        cluster.wait_until(lambda: cluster.sync_state(primary) is not None, "the rebuilt standby to stream",
                           standby)
        cluster.write_conf(primary, node_settings(self.layout, primary, "primary"))
        cluster.psql(primary, "SELECT pg_reload_conf();")
        self.wait_for_sync()
        return {"standby": standby, "method": method, "seconds": time.monotonic() - began}

    def _rewind(self, target: str, source: str) -> None:
        """pg_rewind `target` (down) to the timeline of `source` (the running primary), over the source's
        unix socket as the superuser (peer authentication: the programs run as the server's user)."""
        if not self.cluster.valid(target):
            raise RuntimeError(f"{self.layout.data_dir(target)} holds no cluster to rewind")
        # A just promoted source records its new timeline in its control file only at its next checkpoint;
        # before that, pg_rewind would see one timeline and wrongly find nothing to rewind.
        self.cluster.psql(source, "CHECKPOINT;")
        # The target's own settings first: pg_rewind may replay its crash (an unclean shutdown) and fetch
        # missing WAL with its restore_command, and an override of the other node's must not apply to it.
        self.cluster.write_conf(target, node_settings(self.layout, target, "standby"))
        self.cluster.reset_auto_conf(target)
        source_conn = conninfo(host=str(self.layout.run_dir), port=str(self.layout.port(source)),
                               user=self.cluster.server.name, dbname="postgres")
        self.cluster.server.tool("pg_rewind", "--target-pgdata", str(self.layout.data_dir(target)),
                                 "--source-server", source_conn, "--restore-target-wal", "--no-sync",
                                 timeout=COMMAND_TIMEOUT)

    def clone(self, target: str, source: str) -> None:
        """A fresh copy of the running `source` into an emptied data dir for `target`."""
        shutil.rmtree(self.layout.data_dir(target), ignore_errors=True)
        # --checkpoint=fast, or it waits for the next scheduled checkpoint (minutes).
        self.cluster.server.tool(
            "pg_basebackup", "-D", str(self.layout.data_dir(target)), "-X", "stream", "--checkpoint=fast",
            "--no-sync", "-w", "-d", conninfo(host="127.0.0.1", port=str(self.layout.port(source)),
                                              user=REPLICATION_ROLE, application_name=STANDBY_NAME),
            timeout=START_TIMEOUT)

    def make_standby(self, node: str) -> None:
        """The node's own settings as a standby of the other node (pg_rewind and pg_basebackup copied the
        source's postgresql.conf and postgresql.auto.conf), and its standby.signal."""
        self.cluster.write_conf(node, node_settings(self.layout, node, "standby"))
        self.cluster.reset_auto_conf(node)
        self.cluster.server.write_file(self.layout.data_dir(node) / "standby.signal", "")

    def wait_for_sync(self) -> None:
        primary = self.current_primary()
        self.cluster.wait_until(lambda: self.cluster.sync_state(primary) == "sync",
                                "the standby to stream synchronously", other(primary))
