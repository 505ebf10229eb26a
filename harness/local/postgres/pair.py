"""The local stand-in of RDS PostgreSQL Multi-AZ: a primary and a synchronous streaming standby on loopback.

RDS Multi-AZ commits only once the standby in the other AZ has the WAL, fails over by promoting that
standby, and archives WAL for point-in-time restore. The stand-in reproduces exactly those three
properties, so the smoke and DR suites exercise the same behaviour locally: `synchronous_standby_names`
names the standby, `fail_over()` is the loss of the primary's AZ (its server killed, the standby promoted),
`rebuild_standby()` makes the lost node the new synchronous standby (as RDS replaces it), and every WAL
segment is copied to `archive_dir`. The state dir's layout is in `config.py`; restored servers belong to the
drill that made them, not to the pair (`stop()` leaves them; `sweep_restores()` removes them).

When the server's user cannot reach `root` (as root PostgreSQL runs as `postgres`, and a 0700 parent such
as a `mktemp -d` clone or /root stops it), `state_dir()` moves the state to a directory of its own under
/tmp instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.local.postgres.backup import BaseBackups
from harness.local.postgres.cluster import Cluster
from harness.local.postgres.config import NODES, DatabaseConfig, Layout, other, state_dir
from harness.local.postgres.replication import Replication
from harness.local.postgres.restore import Restores
from harness.local.postgres.server import ServerUser, find_bindir, server_account


class PostgresPair:
    """A PostgreSQL primary with a synchronous standby, WAL archived, on 127.0.0.1 only. `cluster` acts on
    one node as a server (start, stop, SQL), whatever its role."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self.bindir = find_bindir()
        account = server_account()
        self.os_user = account.pw_name
        self.state = state_dir(Path(config.root), account)
        # Outside the project, the state is not the project's to keep: the stand-in's `down` removes it.
        self.relocated = self.state.parent != Path(config.root).resolve()
        self._layout = Layout(self.state, config.primary_port, config.standby_port)
        self.cluster = Cluster(config, self._layout, ServerUser(account, self.bindir, self.state))
        self._replication = Replication(self.cluster)
        self._backups = BaseBackups(self._replication)
        self._restores = Restores(config, self._layout, self.cluster.server, self._backups, self.cluster.locked)

    @property
    def archive_dir(self) -> Path:
        return self._layout.archive_dir

    def data_dir(self, node: str) -> Path:
        return self._layout.data_dir(node)

    def log_file(self, node: str) -> Path:
        return self._layout.log_file(node)

    @property
    def backup_dir(self) -> Path:
        return self._layout.backup_dir

    @property
    def restores_dir(self) -> Path:
        return self._layout.restores_dir

    # ---------------------------------------------------------------- the pair

    def start(self) -> None:
        """Initialise on first use, then start whichever node is down, and return once both accept
        connections and the standby streams synchronously; then take a base backup if there is none (see
        `take_base_backup()`). A no-op (but for the checks) when already up.

        Either node may be the primary (after a failover, the roles are swapped). When a failover was never
        followed by `rebuild_standby()` (a drill killed on the way), both nodes are primaries on disk: the one
        on the newer timeline is the primary, and the other is rebuilt as its standby."""
        with self.cluster.locked():
            if not self._layout.pair_file.exists():
                self._initialise()
            self.cluster.check_settings()
            primary = self._replication.current_primary()
            standby = other(primary)
            self.cluster.start_node(primary)
            self.cluster.set_app_password(primary)
            if self._replication.attached(standby):
                self.cluster.start_node(standby)
                self._replication.wait_for_sync()
            else:
                self._replication.rebuild(primary, standby)
            # As RDS has a snapshot once the instance is created, so point-in-time restore works from then on.
            if self._backups.latest() is None:
                self._backups.take()

    def _initialise(self) -> None:
        """The primary made, the standby copied from it; `pair.json` is written only at the end, so an
        interrupted attempt is started again from scratch."""
        self.cluster.create_primary()
        self._replication.clone("standby", "primary")
        self._replication.make_standby("standby")
        self.cluster.record_settings()

    def stop(self) -> None:
        """Fast shutdown of both nodes (the primary first, whichever node it is, so the standby receives its
        final WAL). Restored servers are left alone: they are a drill's, removed by `discard_restore()` or
        `sweep_restores()`."""
        with self.cluster.locked():
            primary = self.roles()["primary"]
            for node in (primary, other(primary)) if primary else NODES:
                self.cluster.stop_node(node)

    def status(self) -> dict[str, Any]:
        """Per node (keyed by the node's initial name): running, pid, port, role, log file and the state dir
        (in each node's entry, so every value stays a node); for a running primary also `standby_sync_state`
        ('sync' when healthy, None when no standby is connected). The role is the node's current one: after
        a failover the node named "standby" reports role 'primary' (and, until `rebuild_standby()`, so does
        the node it replaced, which is down)."""
        return self.cluster.status()

    def roles(self) -> dict[str, str | None]:
        """Which node ("primary" or "standby", the names of the data dirs) plays which role now:
        {"primary": node or None, "standby": node or None}. The standby is the node with standby.signal;
        the primary is the other one. When neither has it (a failover not yet followed by a rebuild, or two
        promoted nodes), the primary is the node on the newer timeline and there is no standby."""
        return self._replication.roles()

    def healthy(self) -> bool:
        """Multi-AZ as it should be: both nodes run, one is the primary, and the other streams to it
        synchronously (a commit waits for it)."""
        return self._replication.healthy()

    def dsn(self) -> str:
        """A libpq multi-host URI: clients land on whichever node accepts writes, as an RDS endpoint does
        after a failover. connect_timeout bounds each attempt so a hung node cannot hang a client."""
        c = self.config
        return c.app_url(f"127.0.0.1:{c.primary_port},127.0.0.1:{c.standby_port}",
                         "target_session_attrs=read-write&connect_timeout=5")

    # ---------------------------------------------------------------- failover (DRILL-01)

    def promote_standby(self) -> None:
        """Promote the current standby without touching the primary. Fencing the old primary is then the
        caller's job: while it runs, the DSN may still prefer it. `fail_over()` is the whole AZ loss."""
        with self.cluster.locked():
            standby = self.roles()["standby"]
            if standby is None:
                raise RuntimeError(f"the pair in {self.state} has no standby to promote")
            self._replication.promote(standby)

    def fail_over(self) -> dict[str, Any]:
        """The loss of the primary's AZ, as RDS Multi-AZ meets it: the current primary dies at once (SIGKILL
        to the postmaster and every process of that server, without a shutdown checkpoint or a last WAL
        record sent), then the standby is promoted. Returns {"old_primary": node, "new_primary": node,
        "killed_at": epoch seconds, "promoted_at": epoch seconds}; from `promoted_at` on, clients of `dsn()`
        land on the new primary, which commits without a standby until `rebuild_standby()`."""
        with self.cluster.locked():
            return self._replication.fail_over()

    def rebuild_standby(self) -> dict[str, Any]:
        """Make the pair Multi-AZ again after a failover: the node that is not the primary becomes its
        synchronous standby, rewound with pg_rewind (only what diverged is copied back), else re-copied with
        a fresh base backup. A node that is still a standby of this primary (its replication was only cut,
        see `break_replication()`) is reattached as it is. Each node keeps its own port; only the roles swap.
        Returns {"standby": node, "method": "pg_rewind" | "base_backup" | "reattach" | None, "seconds": s}:
        method None (and 0 s) when the pair was healthy already, so nothing was done."""
        with self.cluster.locked():
            primary = self._replication.current_primary()
            return self._replication.rebuild(primary, other(primary))

    def break_replication(self) -> None:
        """For a negative self-test of the failover drill: the primary goes on acknowledging commits that the
        standby never receives, so a failover then loses them. The primary stops waiting for the standby
        (synchronous_standby_names = ''), and the standby is cut off from both the primary and the WAL archive
        (primary_conninfo and restore_command emptied). Set with ALTER SYSTEM, so `rebuild_standby()` (or
        `start()`) undoes it. Returns once the standby's WAL receiver is gone."""
        with self.cluster.locked():
            self._replication.break_replication()

    # ---------------------------------------------------------------- point-in-time restore (DRILL-02)

    def switch_wal(self) -> Path:
        """Close the current WAL segment on the running primary and return it once archived. RDS archives on
        its own every five minutes; a restore drill needs the archive to hold every commit so far, now."""
        return self._backups.switch_wal()

    def take_base_backup(self) -> dict[str, Any]:
        """A base backup of the current primary, as RDS's daily snapshot: pg_basebackup (plain format, the WAL
        it needs streamed alongside, a fast checkpoint) into `backups/base.tmp`, then renamed to
        `backups/base` in place of the previous one, and described in `backups/base.json`. Returns
        {"taken_at": epoch, "timeline": int, "node": the primary's node, "dir": str, "seconds": float};
        `taken_at` (when the copy ended) is the earliest point `restore()` can reach."""
        with self.cluster.locked():
            return self._backups.take()

    def base_backup(self) -> dict[str, Any] | None:
        """What `backups/base.json` says of the base backup ({"taken_at", "timeline", "node"}), or None when
        there is no complete one."""
        return self._backups.latest()

    def restore(self, target_time: float, run_id: str, drill: str, expires: float,
                port: int | None = None, env: str | None = None) -> dict[str, Any]:
        """Restore the database as it was at `target_time` (epoch) into a temporary server, as RDS's
        restore_db_instance_to_point_in_time does: the base backup is copied to `restores/<run_id>/data` and
        recovers from the WAL archive up to `target_time` (following any failover's timeline), then is
        promoted; it listens on 127.0.0.1:`port` (a free one when None) with a unix socket dir of its own.
        `restores/<run_id>/tags.json` is written before anything else: {"harness:drill", "harness:run-id",
        "harness:expires" (ISO 8601 UTC of `expires`), "port", "created_at", "socket_dir"}, and "harness:env"
        when `env` names the plan environment whose drill made it, so a leftover is always found by
        `sweep_restores()`.

        Recovery knows it has reached `target_time` only when it meets a commit after it: the caller keeps
        writing for a moment after `target_time` and then calls `switch_wal()`, so that commit is archived.

        Returns {"name": run_id, "dir", "port", "dsn" (the app user's URL on 127.0.0.1:port, as `dsn()`),
        "pid" (the postmaster), "recovered_at" (epoch, when it was seen promoted), "log", "seconds"}. Raises
        RuntimeError with one line when the target cannot be reached (before the base backup, or the archive
        ends before it) or the server does not start, after removing what it made."""
        return self._restores.create(target_time, run_id, drill, expires, port=port, env=env)

    def discard_restore(self, run_id: str) -> dict[str, Any]:
        """Remove the restore `run_id`: its server stopped (immediate shutdown; SIGKILL to its postmaster and
        children when that fails or the postmaster is dead already), its port refusing, then
        `restores/<run_id>` (and a socket dir of its own elsewhere) removed. {"ok": bool, "detail": str};
        ok when there is nothing to remove."""
        return self._restores.discard(run_id)

    def restores(self) -> list[dict[str, Any]]:
        """Every restore with a tags.json: its tags plus "name" (the run id: the dir's name), "dir" and
        "running" (its postmaster is alive)."""
        return self._restores.tagged()

    def sweep_restores(self, now: float, env: str | None = None) -> list[dict[str, Any]]:
        """Discard the restores harness.drills.judges.sweep says are leftovers at `now` (epoch) for
        environment `env` (None: whatever environment's), and keep the others: past their harness:expires;
        one whose expiry cannot be read is kept (not this sweep's to delete); a dir without any tags by its
        mtime. `float("inf")` discards them all, running or dead, whatever their tags (the stand-in's `down`).
        One entry per restore dir found: {"name", "run_id", "drill", "expires" (as tagged; None untagged),
        "expired": bool (meant to be removed), "removed": bool, "detail"}."""
        return self._restores.sweep(now, env)
