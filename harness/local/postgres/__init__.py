"""The local stand-in of RDS PostgreSQL Multi-AZ: a primary and a synchronous streaming standby on loopback.

RDS Multi-AZ commits only once the standby in the other AZ has the WAL, fails over by promoting that
standby, and archives WAL for point-in-time restore. The stand-in reproduces exactly those three
properties, so the smoke and DR suites exercise the same behaviour locally: `synchronous_standby_names`
names the standby, `fail_over()` is the loss of the primary's AZ (its server killed, the standby promoted),
`rebuild_standby()` makes the lost node the new synchronous standby (as RDS replaces it), and every WAL
segment is copied to `archive_dir`.

Layout under `root / "postgres"`: `primary/` and `standby/` (data dirs, named by their first role: after a
failover the roles swap, each keeping its port; `standby.signal` tells which is which, see `roles()`),
`archive/` (WAL), `log/` (one server log per node), `run/` (the unix sockets, kept private instead of
/var/run/postgresql) and `pair.json` (written last on first init: its presence means the pair is complete).
For point-in-time restore, as RDS keeps a daily snapshot and the WAL since: `backups/base/` (a base backup of
the primary, described by `backups/base.json`) and `restores/<run id>/` (a drill's temporary restored
server: `tags.json`, `data/`, `run/`, `log`), which belong to the drill, not to the pair (`stop()` leaves
them; `sweep_restores()` removes them).
PostgreSQL refuses to run as root, so as root every server program runs as the `postgres` user, which then
owns the state dir.
When that user cannot reach `root` (a 0700 parent: a `mktemp -d` clone, /root), `state_dir()` moves the
state to a directory of its own under /tmp instead.
"""
from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

from harness.drills import judges
from harness.drills.model import TAG_DRILL, TAG_ENV, TAG_EXPIRES, TAG_RUN
from harness.util.net import accepts, free_port
from harness.util.proc import process_alive

START_TIMEOUT = 30.0  # seconds: each server start, the base backup and the wait for a synchronous standby
STOP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0  # initdb and the like
STANDBY_NAME = "standby"  # the standby's application_name, which synchronous_standby_names must match
REPLICATION_ROLE = "replicator"
NODES = ("primary", "standby")  # the data dirs, named by their first role; either may be the primary
CONF_MARKER = "\n# --- harness local stand-in ---\n"  # the stand-in's own block of postgresql.conf follows
# Where the state goes when the server's user cannot reach the project. /tmp rather than /var/tmp: it is
# traversable by every user everywhere, its path is short enough for the unix socket limit, and the state is
# disposable (`harness local down` removes it), so a dir the next boot clears is the right home for what a
# crash leaves. Not $TMPDIR: it may be private to the caller, which is the very problem.
RELOCATION_BASE = Path("/tmp")
RESTORE_TIMEOUT = 120.0  # seconds: a restored server's start and its recovery up to the target, together
# The longest `discard_restore()` takes: pg_ctl's stop, then SIGKILL and the wait for the port to refuse.
DISCARD_TIMEOUT = 2 * STOP_TIMEOUT + 5
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # one path component, never `.` or `..`


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the pair lives and how the app reaches it. Ports, user and database are fixed when the pair is
    first initialised (a mismatch later is an error); the password is (re)applied on every start."""
    root: Path
    password: str
    primary_port: int = 15432
    standby_port: int = 15433
    user: str = "dougust"
    database: str = "dougust"


class PostgresPair:
    """A PostgreSQL primary with a synchronous standby, WAL archived, on 127.0.0.1 only."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self.bindir = _find_bindir()
        # PostgreSQL refuses to run as root; as root, run it as `postgres` (peer auth maps it to the superuser).
        self._as_root = os.geteuid() == 0
        self._server = _server_user() if self._as_root else pwd.getpwuid(os.geteuid())
        self.os_user = self._server.pw_name
        self.state = state_dir(Path(config.root), self._server)
        # Outside the project, the state is not the project's to keep: the stand-in's `down` removes it.
        self.relocated = self.state.parent != Path(config.root).resolve()
        self._ports = {"primary": config.primary_port, "standby": config.standby_port}

    @property
    def archive_dir(self) -> Path:
        return self.state / "archive"

    def data_dir(self, node: str) -> Path:
        return self.state / node

    def log_file(self, node: str) -> Path:
        return self.state / "log" / f"{node}.log"

    @property
    def backup_dir(self) -> Path:
        return self.state / "backups" / "base"

    @property
    def restores_dir(self) -> Path:
        return self.state / "restores"

    # ---------------------------------------------------------------- public API

    def start(self) -> None:
        """Initialise on first use, then start whichever node is down, and return once both accept
        connections and the standby streams synchronously; then take a base backup if there is none (see
        `take_base_backup()`). A no-op (but for the checks) when already up.

        Either node may be the primary (after a failover, the roles are swapped). When a failover was never
        followed by `rebuild_standby()` (a drill killed on the way), both nodes are primaries on disk: the one
        on the newer timeline is the primary, and the other is rebuilt as its standby."""
        with self._locked():
            if not (self.state / "pair.json").exists():
                self._initialise()
            self._check_settings()
            primary = self._current_primary()
            standby = _other(primary)
            self._start_node(primary)
            self._set_app_password()
            if self._attached(standby):
                self._start_node(standby)
                self._wait_for_sync()
            else:
                self._rebuild(primary, standby)
            # As RDS has a snapshot once the instance is created, so point-in-time restore works from then on.
            if self.base_backup() is None:
                self._take_base_backup()

    def stop(self) -> None:
        """Fast shutdown of both nodes (the primary first, whichever node it is, so the standby receives its
        final WAL). Restored servers are left alone: they are a drill's, removed by `discard_restore()` or
        `sweep_restores()`."""
        with self._locked():
            primary = self.roles()["primary"]
            for node in (primary, _other(primary)) if primary else NODES:
                self._stop_node(node)

    def status(self) -> dict[str, Any]:
        """Per node (keyed by the node's initial name): running, pid, port, role, log file and the state dir
        (in each node's entry, so every value stays a node); for a running primary also `standby_sync_state`
        ('sync' when healthy, None when no standby is connected). The role is the node's current one: after
        a failover the node named "standby" reports role 'primary' (and, until `rebuild_standby()`, so does
        the node it replaced, which is down)."""
        result: dict[str, Any] = {}
        for node in NODES:
            pid = self._pid(node)
            role = "standby" if (self.data_dir(node) / "standby.signal").exists() else "primary"
            entry: dict[str, Any] = {"running": pid is not None, "pid": pid, "port": self._ports[node],
                                     "role": role, "log": str(self.log_file(node)), "state_dir": str(self.state)}
            if role == "primary":
                entry["standby_sync_state"] = self._sync_state(node) if pid else None
            result[node] = entry
        return result

    def roles(self) -> dict[str, str | None]:
        """Which node ("primary" or "standby", the names of the data dirs) plays which role now:
        {"primary": node or None, "standby": node or None}. The standby is the node with standby.signal;
        the primary is the other one. When neither has it (a failover not yet followed by a rebuild, or two
        promoted nodes), the primary is the node on the newer timeline and there is no standby."""
        valid = [node for node in NODES if self._valid(node) and node != self._rebuilding()]
        standbys = [node for node in valid if (self.data_dir(node) / "standby.signal").exists()]
        primaries = [node for node in valid if node not in standbys]
        if len(primaries) > 1:
            primaries = [max(primaries, key=self._recency)]
        return {"primary": primaries[0] if primaries else None,
                "standby": standbys[0] if len(standbys) == 1 else None}

    def healthy(self) -> bool:
        """Multi-AZ as it should be: both nodes run, one is the primary, and the other streams to it
        synchronously (a commit waits for it)."""
        roles = self.roles()
        primary, standby = roles["primary"], roles["standby"]
        return (primary is not None and standby is not None and self._pid(primary) is not None
                and self._pid(standby) is not None and self._sync_state(primary) == "sync")

    def dsn(self) -> str:
        """A libpq multi-host URI: clients land on whichever node accepts writes, as an RDS endpoint does
        after a failover. connect_timeout bounds each attempt so a hung node cannot hang a client."""
        c = self.config
        hosts = f"127.0.0.1:{c.primary_port},127.0.0.1:{c.standby_port}"
        return (f"postgresql://{quote(c.user, safe='')}:{quote(c.password, safe='')}@{hosts}/"
                f"{quote(c.database, safe='')}?target_session_attrs=read-write&connect_timeout=5")

    def promote_standby(self) -> None:
        """Promote the current standby without touching the primary. Fencing the old primary is then the
        caller's job: while it runs, the DSN may still prefer it. `fail_over()` is the whole AZ loss."""
        with self._locked():
            standby = self.roles()["standby"]
            if standby is None:
                raise RuntimeError(f"the pair in {self.state} has no standby to promote")
            self._promote(standby)

    def fail_over(self) -> dict[str, Any]:
        """The loss of the primary's AZ, as RDS Multi-AZ meets it: the current primary dies at once (SIGKILL
        to the postmaster and every process of that server, without a shutdown checkpoint or a last WAL
        record sent), then the standby is promoted. Returns {"old_primary": node, "new_primary": node,
        "killed_at": epoch seconds, "promoted_at": epoch seconds}; from `promoted_at` on, clients of `dsn()`
        land on the new primary, which commits without a standby until `rebuild_standby()`."""
        with self._locked():
            roles = self.roles()
            old, new = roles["primary"], roles["standby"]
            if old is None or new is None or self._pid(new) is None:
                raise RuntimeError(f"the pair in {self.state} has no running standby to fail over to "
                                   f"(roles {roles}): run rebuild_standby() or start() first")
            killed_at = self._kill(old)
            self._promote(new)
            return {"old_primary": old, "new_primary": new, "killed_at": killed_at, "promoted_at": time.time()}

    def rebuild_standby(self) -> dict[str, Any]:
        """Make the pair Multi-AZ again after a failover: the node that is not the primary becomes its
        synchronous standby, rewound with pg_rewind (only what diverged is copied back), else re-copied with
        a fresh base backup. A node that is still a standby of this primary (its replication was only cut,
        see `break_replication()`) is reattached as it is. Each node keeps its own port; only the roles swap.
        Returns {"standby": node, "method": "pg_rewind" | "base_backup" | "reattach" | None, "seconds": s}:
        method None (and 0 s) when the pair was healthy already, so nothing was done."""
        with self._locked():
            primary = self._current_primary()
            return self._rebuild(primary, _other(primary))

    def break_replication(self) -> None:
        """For a negative self-test of the failover drill: the primary goes on acknowledging commits that the
        standby never receives, so a failover then loses them. The primary stops waiting for the standby
        (synchronous_standby_names = ''), and the standby is cut off from both the primary and the WAL archive
        (primary_conninfo and restore_command emptied). Set with ALTER SYSTEM, so `rebuild_standby()` (or
        `start()`) undoes it. Returns once the standby's WAL receiver is gone."""
        with self._locked():
            roles = self.roles()
            primary, standby = roles["primary"], roles["standby"]
            if primary is None or standby is None or not (self._pid(primary) and self._pid(standby)):
                raise RuntimeError(f"both nodes of the pair in {self.state} must run to break replication")
            self._psql(primary, "ALTER SYSTEM SET synchronous_standby_names = '';\nSELECT pg_reload_conf();\n")
            self._wait_until(lambda: self._sync_state(primary) != "sync", "the primary to stop waiting for "
                             "its standby", primary)
            self._psql(standby, "ALTER SYSTEM SET primary_conninfo = '';\n"
                                "ALTER SYSTEM SET restore_command = '';\nSELECT pg_reload_conf();\n")
            self._wait_until(lambda: not self._replicating(primary, standby), "the standby to stop receiving WAL",
                             standby)

    def switch_wal(self) -> Path:
        """Close the current WAL segment on the running primary and return it once archived. RDS archives on
        its own every five minutes; a restore drill needs the archive to hold every commit so far, now."""
        primary = self.roles()["primary"]
        if primary is None or self._pid(primary) is None:
            raise RuntimeError(f"no primary of the pair in {self.state} is running")
        name = self._psql(primary, "SELECT pg_walfile_name(pg_switch_wal());").strip()
        segment = self.archive_dir / name
        deadline = time.monotonic() + START_TIMEOUT
        while not segment.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{segment.name} was not archived within {START_TIMEOUT:.0f} s\n"
                                   f"--- last lines of {self.log_file(primary)} ---\n"
                                   f"{self._log_tail(primary)}")
            time.sleep(0.05)
        return segment

    # ---------------------------------------------------------------- point-in-time restore (DRILL-02)

    def take_base_backup(self) -> dict[str, Any]:
        """A base backup of the current primary, as RDS's daily snapshot: pg_basebackup (plain format, the WAL
        it needs streamed alongside, a fast checkpoint) into `backups/base.tmp`, then renamed to
        `backups/base` in place of the previous one, and described in `backups/base.json`. Returns
        {"taken_at": epoch, "timeline": int, "node": the primary's node, "dir": str, "seconds": float};
        `taken_at` (when the copy ended) is the earliest point `restore()` can reach."""
        with self._locked():
            return self._take_base_backup()

    def base_backup(self) -> dict[str, Any] | None:
        """What `backups/base.json` says of the base backup ({"taken_at", "timeline", "node"}), or None when
        there is no complete one."""
        try:
            record = json.loads((self.state / "backups" / "base.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not (self.backup_dir / "global" / "pg_control").exists():
            return None
        return record

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
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            raise RuntimeError(f"restore name {run_id!r} is not one short path component "
                               "(letters, digits, '.', '_', '-'; at most 64)")
        began = time.monotonic()
        directory = self.restores_dir / run_id
        if os.path.lexists(directory):
            raise RuntimeError(f"a restore named {run_id} exists already in {directory}: discard it first")
        record = self.base_backup()
        if record is None:
            raise RuntimeError(f"the pair in {self.state} has no base backup to restore from: run start() or "
                               "take_base_backup()")
        target = _pg_timestamp(target_time)
        if target_time < record["taken_at"]:
            raise RuntimeError(f"restore point {target} is before the oldest base backup "
                               f"({_pg_timestamp(record['taken_at'])}): it cannot be reached")
        if port is None:
            port = free_port(exclude=set(self._ports.values()))
        socket_dir = directory / "run"
        if len(str(socket_dir / f".s.PGSQL.{port}").encode()) > 107:  # sun_path: 108 bytes with the NUL
            # A deep state dir and a long name: a dir of its own under /tmp rather than a socket path the
            # kernel refuses (named after the restore's dir, so the discard finds it).
            socket_dir = _short_socket_dir(directory)
        data, log = directory / "data", directory / "log"
        self._claim(self.restores_dir)
        try:
            self._claim(directory)
            self._write_server_file(directory / "tags.json", json.dumps({
                TAG_DRILL: drill, TAG_RUN: run_id, **({TAG_ENV: env} if env is not None else {}),
                TAG_EXPIRES: dt.datetime.fromtimestamp(expires, dt.timezone.utc).isoformat(timespec="seconds"),
                "port": port, "created_at": time.time(), "socket_dir": str(socket_dir)}, indent=2) + "\n")
            self._claim(socket_dir)
            with self._locked():  # not while take_base_backup() replaces the copy
                self._run_as_server(["cp", "-a", "--", str(self.backup_dir), str(data)], timeout=COMMAND_TIMEOUT)
            data.chmod(0o700)
            for name in ("standby.signal", "recovery.signal", "postmaster.pid", "postmaster.opts"):
                (data / name).unlink(missing_ok=True)
            self._write_server_file(data / "recovery.signal", "")
            self._write_server_file(data / "postgresql.auto.conf", AUTO_CONF_HEADER)
            # The primary's own block is replaced (it names the pair's port, socket and archiving).
            _write_conf_file(data / "postgresql.conf", {
                "listen_addresses": "'127.0.0.1'",
                "port": str(port),
                "unix_socket_directories": _conf_str(str(socket_dir)),
                "hot_standby": "on",  # so its progress can be asked while it recovers
                "archive_mode": "off",  # a copy: its WAL must never mix with the pair's archive
                "synchronous_standby_names": "''",
                "restore_command": _conf_str(self._restore_command()),
                "recovery_target_time": _conf_str(target),
                "recovery_target_action": "'promote'",
                "recovery_target_timeline": "'latest'",  # the archive's .history files lead past failovers
            })
            deadline = time.monotonic() + RESTORE_TIMEOUT
            try:
                self._server_tool("pg_ctl", "start", "-D", str(data), "-l", str(log), "-w",
                                  "-t", str(int(RESTORE_TIMEOUT)), timeout=RESTORE_TIMEOUT + 5)
            except RuntimeError as error:
                raise RuntimeError(_log_reason(log) or str(error).splitlines()[0]) from None
            while True:
                pid = self._restore_pid(data)
                if pid is None:
                    raise RuntimeError(_log_reason(log) or "the server stopped during recovery")
                try:
                    in_recovery = self._psql_at(socket_dir, port, "SELECT pg_is_in_recovery();").strip()
                except RuntimeError:
                    in_recovery = "?"  # starting, or on its way down
                if in_recovery == "f":
                    recovered_at = time.time()
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not promoted within {RESTORE_TIMEOUT:.0f} s "
                                       f"({_log_reason(log) or 'still recovering'})")
                time.sleep(0.05)
            # The caller's password, as `dsn()` has it (the restored one is whatever was set at target_time).
            self._psql_at(socket_dir, port, f"ALTER ROLE {_ident(self.config.user)} "
                                            f"PASSWORD '{_scram_verifier(self.config.password)}';")
        except BaseException as error:
            cleanup = self._discard(directory)
            if not isinstance(error, Exception):
                raise  # Ctrl-C, SIGTERM: cleaned up, and passed on as it is
            reason = " ".join(str(error).split()) or type(error).__name__
            if not cleanup["ok"]:
                reason += f" (and its removal failed: {' '.join(cleanup['detail'].split())})"
            raise RuntimeError(f"restore {run_id} to {target} failed: {reason}") from None
        c = self.config
        return {"name": run_id, "dir": str(directory), "port": port,
                "dsn": (f"postgresql://{quote(c.user, safe='')}:{quote(c.password, safe='')}@127.0.0.1:{port}/"
                        f"{quote(c.database, safe='')}?connect_timeout=5"),
                "pid": pid, "recovered_at": recovered_at, "log": str(log), "seconds": time.monotonic() - began}

    def discard_restore(self, run_id: str) -> dict[str, Any]:
        """Remove the restore `run_id`: its server stopped (immediate shutdown; SIGKILL to its postmaster and
        children when that fails or the postmaster is dead already), its port refusing, then
        `restores/<run_id>` (and a socket dir of its own elsewhere) removed. {"ok": bool, "detail": str};
        ok when there is nothing to remove."""
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            return {"ok": False, "detail": f"restore name {run_id!r} is not a restore's name"}
        return self._discard(self.restores_dir / run_id)

    def restores(self) -> list[dict[str, Any]]:
        """Every restore with a tags.json: its tags plus "name" (the run id: the dir's name), "dir" and
        "running" (its postmaster is alive)."""
        found = []
        for directory in self._restore_dirs():
            tags = _read_tags(directory)
            if tags is not None:
                found.append({**tags, "name": directory.name, "dir": str(directory),
                              "running": self._restore_pid(directory / "data") is not None})
        return found

    def sweep_restores(self, now: float, env: str | None = None) -> list[dict[str, Any]]:
        """Discard the restores harness.drills.judges.sweep says are leftovers at `now` (epoch) for
        environment `env` (None: whatever environment's), and keep the others: past their harness:expires;
        one whose expiry cannot be read is kept (not this sweep's to delete); a dir without any tags by its
        mtime. `float("inf")` discards them all, running or dead, whatever their tags (the stand-in's `down`).
        One entry per restore dir found: {"name", "run_id", "drill", "expires" (as tagged; None untagged),
        "expired": bool (meant to be removed), "removed": bool, "detail"}."""
        report = []
        for directory in self._restore_dirs():
            tags = _read_tags(directory)
            try:
                age_s = now - directory.lstat().st_mtime
            except OSError:
                continue  # gone meanwhile
            if now == float("inf"):
                expired, why = True, "every restore goes with the pair"
            else:
                expired, why = judges.sweep(tags, now, env, age_s)
            tags = tags or {}
            entry = {"name": directory.name, "run_id": tags.get(TAG_RUN, directory.name),
                     "drill": tags.get(TAG_DRILL), "expires": tags.get(TAG_EXPIRES), "expired": expired,
                     "removed": False, "detail": why}
            if expired:
                result = self._discard(directory)
                entry |= {"removed": result["ok"], "detail": f"{why}: {result['detail']}"}
            report.append(entry)
        return report

    # ---------------------------------------------------------------- first init

    def _initialise(self) -> None:
        """initdb the primary, create the roles and the database, base-backup the standby. Anything a
        previous interrupted attempt left is discarded first; `pair.json` is written only at the end."""
        self._prepare_state_dir()
        for node in NODES:
            self._stop_node(node, mode="immediate")
            shutil.rmtree(self.data_dir(node), ignore_errors=True)
        (self.state / "rebuilding").unlink(missing_ok=True)
        shutil.rmtree(self.state / "backups", ignore_errors=True)  # of a cluster that is no more
        primary = self.data_dir("primary")
        # --no-sync (here and for the base backup): a stand-in needs no crash safety while it is being
        # built, and skipping the fsync of every file is most of initdb's time on a slow disk.
        self._server_tool("initdb", "-D", str(primary), "-U", self.os_user, "--encoding=UTF8", "--locale=C",
                          "--auth-local=peer", "--auth-host=scram-sha-256", "--no-sync")
        self._write_conf("primary", self._node_settings("primary", "primary"))
        (primary / "pg_hba.conf").write_text(
            "# Local stand-in: loopback only. Unix sockets live in a 0700 dir of the server's user.\n"
            "local  all          all                        peer\n"
            "# Replication is trusted for its dedicated role, and only from 127.0.0.1: nothing else can\n"
            "# reach a loopback port, and it spares the standby a stored password.\n"
            f"host   replication  {REPLICATION_ROLE}  127.0.0.1/32  trust\n"
            "host   all          all                        127.0.0.1/32  scram-sha-256\n")
        self._start_node("primary")
        user, database = _ident(self.config.user), _ident(self.config.database)
        self._psql("primary",
                   "SET synchronous_commit = local;\n"  # no standby exists yet to wait for
                   f"CREATE ROLE {REPLICATION_ROLE} REPLICATION LOGIN;\n"
                   f"CREATE ROLE {user} LOGIN;\n"
                   f"CREATE DATABASE {database} OWNER {user};\n")
        self._base_backup("standby", "primary")
        self._make_standby("standby")
        (self.state / "pair.json").write_text(json.dumps(self._settings(), indent=2) + "\n")

    def _node_settings(self, node: str, role: str, sync: bool = True) -> dict[str, str]:
        """The whole of a node's own settings for its role. Both nodes share everything but the port (each
        data dir keeps its own for good) and what the role needs; `sync=False` lets a primary acknowledge
        commits without a standby (after a failover, until its new standby streams)."""
        archived = self._archive_path("%f")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self._ports[node]),
            "unix_socket_directories": _conf_str(str(self.state / "run")),
            "wal_level": "replica",
            "synchronous_commit": "on",
            # A standby has no standby of its own: if it is promoted, waiting for one would block every commit.
            "synchronous_standby_names": _conf_str(STANDBY_NAME) if role == "primary" and sync else "''",
            "max_wal_senders": "5",
            "wal_keep_size": "'128MB'",
            "hot_standby": "on",
            "wal_log_hints": "on",  # lets a failover rejoin the old primary with pg_rewind
            "archive_mode": "on",
            # Never overwrite an archived segment; copy then rename, so an interrupted cp leaves no partial
            # file under the final name. A segment archived already with the same content counts as archived:
            # after a failover the nodes share segments, and a refusal would stall the archiver for good.
            "archive_command": _conf_str(
                f"if test -f {archived}; then cmp -s %p {archived}; "
                f"else cp %p {archived}.$$.tmp && mv {archived}.$$.tmp {archived}; fi"),
            # Catch up from the archive when the primary no longer keeps the WAL a standby needs (used in
            # recovery only).
            "restore_command": _conf_str(self._restore_command()),
        }
        if role == "standby":
            settings["primary_conninfo"] = _conf_str(_conninfo(
                host="127.0.0.1", port=str(self._ports[_other(node)]), user=REPLICATION_ROLE,
                application_name=STANDBY_NAME))  # what the primary's synchronous_standby_names matches
        return settings

    def _archive_path(self, name: str) -> str:
        # % is the placeholder character in archive/restore commands, so a literal one is doubled.
        return shlex.quote(str(self.archive_dir).replace("%", "%%")) + "/" + name

    def _restore_command(self) -> str:
        """Copy a WAL file (or a timeline's .history) from the archive. test -f first: a file not archived
        (yet) is the normal end of the archive, not an error worth a line in the log."""
        archived = self._archive_path("%f")
        return f"test -f {archived} && cp {archived} %p"

    def _write_conf(self, node: str, settings: dict[str, str]) -> None:
        """Replace the stand-in's block at the end of the node's postgresql.conf (see `_write_conf_file`).
        Replaced, not appended to: pg_rewind and pg_basebackup copy the other node's file, whose block names
        the other node's port and role."""
        _write_conf_file(self.data_dir(node) / "postgresql.conf", settings)

    def _prepare_state_dir(self) -> None:
        """Create the state dirs owned by the server's user, and prove that user can reach them: the mode
        bits `state_dir()` judged by are not the whole story (ACLs, security modules)."""
        socket_path = self.state / "run" / f".s.PGSQL.{max(self._ports.values())}"
        if len(str(socket_path).encode()) > 107:  # sun_path holds 108 bytes with the final NUL
            raise RuntimeError(f"state dir {self.state} is too deep: the unix socket path {socket_path} would "
                               "exceed the 107-byte limit; use a shorter root")
        self._claim(self.state)
        if self._as_root:
            probe = subprocess.run(["runuser", "-u", self.os_user, "--", "test", "-w", str(self.state)],
                                   capture_output=True, timeout=COMMAND_TIMEOUT)
            if probe.returncode != 0:
                raise RuntimeError(
                    f"PostgreSQL runs as '{self.os_user}' (it refuses root), and that user cannot reach "
                    f"{self.state} although the mode bits of its parents allow it (an ACL or a security module?): "
                    f"grant '{self.os_user}' search access to its parents, or use another root")
        for sub in ("archive", "log", "run"):
            self._claim(self.state / sub)

    def _claim(self, path: Path) -> None:
        """Make `path` a 0700 directory of the server's user, creating it when missing. The state may sit
        in world-writable /tmp, so whatever is found there is checked, not trusted: through a descriptor
        opened without following links (its fstat is what lstat says, with no window to swap the entry
        before the chown), a symlink is refused rather than followed, as is a directory someone else owns."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass  # kept from an earlier run, or planted: the checks below tell
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as error:
            raise RuntimeError(f"{path} is not a directory but a symlink or a file ({error.strerror}): "
                               "remove it and start again") from None
        try:
            owner = os.fstat(fd).st_uid
            if owner not in (os.geteuid(), self._server.pw_uid):
                raise RuntimeError(f"{path} belongs to uid {owner}, not to '{self.os_user}' or to you: "
                                   "something else made it; remove it and start again")
            os.fchmod(fd, 0o700)
            if self._as_root:
                os.fchown(fd, self._server.pw_uid, self._server.pw_gid)
        finally:
            os.close(fd)

    def _settings(self) -> dict[str, Any]:
        c = self.config
        return {"primary_port": c.primary_port, "standby_port": c.standby_port, "user": c.user,
                "database": c.database}

    def _check_settings(self) -> None:
        stored = json.loads((self.state / "pair.json").read_text())
        if stored != self._settings():
            raise RuntimeError(f"the pair in {self.state} was initialised with {stored}, not "
                               f"{self._settings()}: use those settings, or remove {self.state} to start afresh")

    # ---------------------------------------------------------------- roles, failover and rebuild

    def _current_primary(self) -> str:
        primary = self.roles()["primary"]
        if primary is None:
            raise RuntimeError(f"the pair in {self.state} has no primary (both data dirs are standbys, or "
                               f"missing): stop it and remove {self.state} to start a fresh pair")
        return primary

    def _valid(self, node: str) -> bool:
        """Whether the node's data dir holds a cluster (not missing, nor emptied for a base backup)."""
        return (self.data_dir(node) / "global" / "pg_control").exists()

    def _rebuilding(self) -> str | None:
        """The node a rebuild was under way on (named before its data dir is touched, removed once it is a
        standby again): whatever its data dir holds, it is not a primary."""
        try:
            return (self.state / "rebuilding").read_text().strip() or None
        except OSError:
            return None

    def _recency(self, node: str) -> tuple[int, int, int]:
        """What makes one of two primaries the newer: its timeline (a promotion starts a new one, and writes
        its history file at once, before the control file records it at the next checkpoint), then whether it
        runs, then how far its last checkpoint is."""
        timeline, checkpoint = 0, 0
        try:
            control = self._server_tool("pg_controldata", "-D", str(self.data_dir(node)),
                                        env={"LC_ALL": "C"}, timeout=10)
            fields = dict(line.split(":", 1) for line in control.splitlines() if ":" in line)
            timeline = int(fields["Latest checkpoint's TimeLineID"].strip())
            high, low = fields["Latest checkpoint location"].strip().split("/")
            checkpoint = (int(high, 16) << 32) | int(low, 16)
        except (RuntimeError, KeyError, ValueError):
            pass
        for history in (self.data_dir(node) / "pg_wal").glob("*.history"):
            try:
                timeline = max(timeline, int(history.stem, 16))
            except ValueError:
                continue
        return timeline, int(self._pid(node) is not None), checkpoint

    def _attached(self, node: str) -> bool:
        """Whether the node is a standby as the stand-in made it: standby.signal, and none of the settings
        `break_replication()` overrides (nor any other ALTER SYSTEM) on either node."""
        return (self._valid(node) and (self.data_dir(node) / "standby.signal").exists()
                and self._rebuilding() is None and not any(self._overridden(n) for n in NODES))

    def _overridden(self, node: str) -> bool:
        """Whether the node's postgresql.auto.conf sets anything (the stand-in leaves it empty)."""
        try:
            text = (self.data_dir(node) / "postgresql.auto.conf").read_text()
        except OSError:
            return False
        return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())

    def _kill(self, node: str) -> float:
        """SIGKILL the node's postmaster and every process of that server (an AZ gone: nothing shuts down
        cleanly, nothing sends a last WAL record), wait until none is left and its port refuses, and clear the
        lock files the dead server left. Returns when the kill was sent (epoch seconds)."""
        pid = self._pid(node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        # Its children (backends, walsender, archiver and what it runs) would exit on their own once they
        # notice the postmaster's death; an AZ loss takes them at the same instant.
        survivors = _kill_all(lambda: self._server_processes(node), self._ports[node])
        if survivors is not None:
            raise RuntimeError(f"the {node} node of {self.state} still has processes {survivors} or a "
                               f"listener on port {self._ports[node]} {STOP_TIMEOUT:.0f} s after SIGKILL")
        self._clear_stale_locks(node)
        return killed_at

    def _promote(self, node: str) -> None:
        self._server_tool("pg_ctl", "promote", "-D", str(self.data_dir(node)), "-w",
                          "-t", str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 5)

    def _rebuild(self, primary: str, standby: str) -> dict[str, Any]:
        """Make `standby` the synchronous standby of `primary` (see `rebuild_standby()`); the lock is held."""
        began = time.monotonic()
        if self._attached(standby) and self.healthy():
            return {"standby": standby, "method": None, "seconds": 0.0}
        self._start_node(primary)
        # Until its new standby streams, the primary acknowledges commits alone, as after a failover: a
        # synchronous name with no standby behind it would hang every commit for the rebuild's length.
        self._write_conf(primary, self._node_settings(primary, "primary", sync=False))
        self._psql(primary, "ALTER SYSTEM RESET ALL;\nSELECT pg_reload_conf();\n")
        # Named before anything in its data dir changes, so an interrupted rebuild never makes it a primary.
        (self.state / "rebuilding").write_text(standby + "\n")
        self._stop_node(standby)
        self._clear_stale_locks(standby)
        if self._valid(standby) and (self.data_dir(standby) / "standby.signal").exists():
            method = "reattach"  # still a standby of this primary (on its timeline): nothing diverged
        else:
            method = "pg_rewind"
            try:
                self._rewind(standby, primary)
            except RuntimeError:
                method = "base_backup"
                self._base_backup(standby, primary)
        self._make_standby(standby)
        (self.state / "rebuilding").unlink(missing_ok=True)
        self._start_node(standby)
        self._wait_until(lambda: self._sync_state(primary) is not None, "the rebuilt standby to stream", standby)
        self._write_conf(primary, self._node_settings(primary, "primary"))
        self._psql(primary, "SELECT pg_reload_conf();")
        self._wait_for_sync()
        return {"standby": standby, "method": method, "seconds": time.monotonic() - began}

    def _rewind(self, target: str, source: str) -> None:
        """pg_rewind `target` (down) to the timeline of `source` (the running primary), over the source's
        unix socket as the superuser (peer authentication: the programs run as the server's user)."""
        if not self._valid(target):
            raise RuntimeError(f"{self.data_dir(target)} holds no cluster to rewind")
        # A just promoted source records its new timeline in its control file only at its next checkpoint;
        # before that, pg_rewind would see one timeline and wrongly find nothing to rewind.
        self._psql(source, "CHECKPOINT;")
        # The target's own settings first: pg_rewind may replay its crash (an unclean shutdown) and fetch
        # missing WAL with its restore_command, and an override of the other node's must not apply to it.
        self._write_conf(target, self._node_settings(target, "standby"))
        self._reset_auto_conf(target)
        source_conn = _conninfo(host=str(self.state / "run"), port=str(self._ports[source]), user=self.os_user,
                                dbname="postgres")
        self._server_tool("pg_rewind", "--target-pgdata", str(self.data_dir(target)), "--source-server",
                          source_conn, "--restore-target-wal", "--no-sync", timeout=COMMAND_TIMEOUT)

    def _base_backup(self, target: str, source: str) -> None:
        """A fresh copy of the running `source` into an emptied data dir for `target`."""
        shutil.rmtree(self.data_dir(target), ignore_errors=True)
        # --checkpoint=fast, or it waits for the next scheduled checkpoint (minutes).
        self._server_tool(
            "pg_basebackup", "-D", str(self.data_dir(target)), "-X", "stream", "--checkpoint=fast", "--no-sync",
            "-w", "-d", _conninfo(host="127.0.0.1", port=str(self._ports[source]), user=REPLICATION_ROLE,
                                  application_name=STANDBY_NAME), timeout=START_TIMEOUT)

    def _make_standby(self, node: str) -> None:
        """The node's own settings as a standby of the other node (pg_rewind and pg_basebackup copied the
        source's postgresql.conf and postgresql.auto.conf), and its standby.signal."""
        self._write_conf(node, self._node_settings(node, "standby"))
        self._reset_auto_conf(node)
        (self.data_dir(node) / "standby.signal").write_text("")
        if self._as_root:
            os.chown(self.data_dir(node) / "standby.signal", self._server.pw_uid, self._server.pw_gid)

    def _reset_auto_conf(self, node: str) -> None:
        """Empty a stopped node's postgresql.auto.conf (ALTER SYSTEM RESET ALL, without a server)."""
        self._write_server_file(self.data_dir(node) / "postgresql.auto.conf", AUTO_CONF_HEADER)

    def _write_server_file(self, path: Path, text: str) -> None:
        """Write a file the server's user owns (a config file, a signal file, a restore's tags)."""
        path.write_text(text)
        if self._as_root:
            os.chown(path, self._server.pw_uid, self._server.pw_gid)

    def _replicating(self, primary: str, standby: str) -> bool:
        """Whether the standby still has a WAL receiver, or the primary a WAL sender for it."""
        try:
            sender = self._psql(primary, "SELECT count(*) FROM pg_stat_replication "
                                         f"WHERE application_name = '{STANDBY_NAME}';").strip()
            receiver = self._psql(standby, "SELECT count(*) FROM pg_stat_wal_receiver;").strip()
        except RuntimeError:
            return True
        return sender != "0" or receiver != "0"

    # ---------------------------------------------------------------- running nodes

    def _start_node(self, node: str) -> None:
        if self._pid(node) is not None:
            return
        self._clear_stale_locks(node)
        try:
            self._server_tool("pg_ctl", "start", "-D", str(self.data_dir(node)), "-l", str(self.log_file(node)),
                              "-w", "-t", str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 5)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n--- last lines of {self.log_file(node)} ---\n{self._log_tail(node)}") \
                from None

    def _stop_node(self, node: str, mode: str = "fast") -> None:
        if self._pid(node) is None:
            return
        command = ["pg_ctl", "stop", "-D", str(self.data_dir(node)), "-w", "-t", str(int(STOP_TIMEOUT))]
        try:
            self._server_tool(*command, "-m", mode, timeout=STOP_TIMEOUT + 5)
        except RuntimeError:
            if mode == "immediate":
                raise
            self._server_tool(*command, "-m", "immediate", timeout=STOP_TIMEOUT + 5)

    def _pid(self, node: str) -> int | None:
        """The postmaster's pid when it runs (the check pg_ctl status makes, without a process)."""
        try:
            pid = int((self.data_dir(node) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def _server_processes(self, node: str) -> list[int]:
        """Live processes of the node's server, the postmaster first: every one of them (and whatever the
        archiver runs) works in the data dir, as the server's user. Linux only (/proc)."""
        return self._processes_in(self.data_dir(node), self._pid(node))

    def _processes_in(self, data: Path, postmaster: int | None = None) -> list[int]:
        """Live processes of the server's user working in the data dir `data` (a server), or naming it on
        their command line (the copy of the base backup into it, when a restore was interrupted), `postmaster`
        first."""
        data_dir = str(data.resolve())
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if entry.stat().st_uid != self._server.pw_uid:
                    continue
                if os.readlink(entry / "cwd") != data_dir and not any(
                        arg == data_dir or arg.startswith(data_dir + "/")
                        for arg in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")):
                    continue
            except OSError:
                continue
            if process_alive(int(entry.name)):
                found.append(int(entry.name))
        return sorted(found, key=lambda pid: pid != postmaster)

    def _clear_stale_locks(self, node: str) -> None:
        """Remove the lock files a killed server left (postmaster.pid, the socket's lock) once none of its
        processes is left. PostgreSQL clears them itself, unless the dead pid is a zombie that the container's
        init has not reaped yet: kill(pid, 0) then succeeds, and the server refuses to start."""
        if self._pid(node) is not None or self._server_processes(node):
            return
        (self.data_dir(node) / "postmaster.pid").unlink(missing_ok=True)
        socket_lock = self.state / "run" / f".s.PGSQL.{self._ports[node]}.lock"
        try:
            owner = int(socket_lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        if not process_alive(owner):
            socket_lock.unlink(missing_ok=True)
            (self.state / "run" / f".s.PGSQL.{self._ports[node]}").unlink(missing_ok=True)

    def _set_app_password(self) -> None:
        """The caller's password is authoritative, so it is set on every start. Only a SCRAM verifier is
        sent: the plain password never reaches the server log or a process list."""
        verifier = _scram_verifier(self.config.password)
        self._psql(self._current_primary(),
                   "SET synchronous_commit = local;\n"  # the standby may not run yet
                   f"ALTER ROLE {_ident(self.config.user)} PASSWORD '{verifier}';\n")

    def _wait_for_sync(self) -> None:
        primary = self._current_primary()
        self._wait_until(lambda: self._sync_state(primary) == "sync", "the standby to stream synchronously",
                         _other(primary))

    def _wait_until(self, check: Any, what: str, node: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                                   f"--- last lines of {self.log_file(node)} ---\n{self._log_tail(node)}")
            time.sleep(0.05)

    def _sync_state(self, node: str) -> str | None:
        """The standby's sync_state as `node` sees it; None also while `node` starts or shuts down."""
        try:
            out = self._psql(node, "SELECT sync_state FROM pg_stat_replication "
                                   f"WHERE application_name = '{STANDBY_NAME}' AND state = 'streaming';")
        except RuntimeError:
            return None
        return out.strip() or None

    def _log_tail(self, node: str, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file(node).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ---------------------------------------------------------------- running programs

    def _psql(self, node: str, sql: str) -> str:
        """Run SQL as the superuser over the node's private unix socket; returns unaligned output."""
        return self._psql_at(self.state / "run", self._ports[node], sql)

    def _psql_at(self, socket_dir: Path, port: int, sql: str) -> str:
        """Run SQL as the superuser over the unix socket in `socket_dir` (a node's, a restore's)."""
        return self._server_tool("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h",
                                 str(socket_dir), "-p", str(port), "-U", self.os_user,
                                 "-d", "postgres", input=sql, timeout=10)

    def _server_tool(self, program: str, *args: str, input: str | None = None,
                     timeout: float = COMMAND_TIMEOUT, env: dict[str, str] | None = None) -> str:
        """Run a PostgreSQL program as the server's user, with a timeout; raise with its output on failure."""
        return self._run_as_server([str(self.bindir / program), *args], input=input, timeout=timeout, env=env)

    def _run_as_server(self, command: list[str], input: str | None = None, timeout: float = COMMAND_TIMEOUT,
                       env: dict[str, str] | None = None) -> str:
        """Run a program as the server's user, with a timeout; raise with its output on failure."""
        what = " ".join([Path(command[0]).name, *command[1:3]])
        if self._as_root:
            command = ["runuser", "-u", self.os_user, "--", *command]
        # PG* variables of the caller (PGHOST, PGPORT, PGDATA...) must not redirect these programs.
        environment = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        try:
            done = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout,
                                  env=environment | (env or {}), cwd=self.state if self.state.exists() else "/")
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{what} did not finish within {timeout:.0f} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")
        return done.stdout

    # ---------------------------------------------------------------- base backups and restores

    def _take_base_backup(self) -> dict[str, Any]:
        """See `take_base_backup()`; the lock is held."""
        primary = self._current_primary()
        if self._pid(primary) is None:
            raise RuntimeError(f"the primary of the pair in {self.state} is not running: start() it first")
        backups = self.state / "backups"
        self._claim(backups)
        temp, old = backups / "base.tmp", backups / "base.old"
        for leftover in (temp, old):
            shutil.rmtree(leftover, ignore_errors=True)
        began = time.monotonic()
        # Its own application_name: pg_basebackup's WAL stream must never pass for the synchronous standby.
        self._server_tool(
            "pg_basebackup", "-D", str(temp), "-X", "stream", "--checkpoint=fast", "--no-sync", "-w",
            "-d", _conninfo(host="127.0.0.1", port=str(self._ports[primary]), user=REPLICATION_ROLE,
                            application_name="base_backup"), timeout=START_TIMEOUT)
        taken_at = time.time()  # the copy is consistent from its end on: the earliest point a restore reaches
        start = re.search(r"^START TIMELINE: (\d+)$", (temp / "backup_label").read_text(), re.MULTILINE)
        timeline = int(start.group(1)) if start else None
        if self.backup_dir.exists():
            os.rename(self.backup_dir, old)
        os.rename(temp, self.backup_dir)
        shutil.rmtree(old, ignore_errors=True)
        record = {"taken_at": taken_at, "timeline": timeline, "node": primary}
        written = backups / "base.json.tmp"
        self._write_server_file(written, json.dumps(record, indent=2) + "\n")
        os.replace(written, backups / "base.json")
        return record | {"dir": str(self.backup_dir), "seconds": time.monotonic() - began}

    def _restore_dirs(self) -> list[Path]:
        try:
            return sorted(path for path in self.restores_dir.iterdir() if path.is_dir() and not path.is_symlink())
        except OSError:
            return []

    def _restore_pid(self, data: Path) -> int | None:
        """A restored server's postmaster, when alive (not a zombie) and working in `data`: a stale
        postmaster.pid may name a pid reused since by another program."""
        try:
            pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        if not process_alive(pid):
            return None
        try:
            if os.readlink(f"/proc/{pid}/cwd") != str(data.resolve()):
                return None
        except FileNotFoundError:
            return None
        except OSError:
            pass  # no /proc to ask (macOS): the pid file stands
        return pid

    def _discard(self, directory: Path) -> dict[str, Any]:
        """Stop the restored server in `directory` and remove it all (see `discard_restore()`)."""
        if not os.path.lexists(directory):
            return {"ok": True, "detail": f"nothing to discard at {directory}"}
        tags = _read_tags(directory) or {}
        data = directory / "data"
        port = tags.get("port")
        postmaster = self._restore_pid(data)
        found = self._processes_in(data, postmaster)
        how = "no server was running"
        if postmaster is not None:
            how = f"server {postmaster} stopped"
            try:
                self._server_tool("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w",
                                  "-t", str(int(STOP_TIMEOUT)), timeout=STOP_TIMEOUT + 5)
            except RuntimeError:
                how = f"server {postmaster} killed"
        elif found:
            how = f"the processes left of a dead server killed ({len(found)})"
        if found:
            # What pg_ctl left (or all of it, the postmaster dead or deaf): its children, a restore_command.
            survivors = _kill_all(lambda: self._processes_in(data), port if isinstance(port, int) else None)
            if survivors is not None:
                return {"ok": False, "detail": f"{directory.name}: processes {survivors} or a listener on "
                                               f"port {port} left {STOP_TIMEOUT:.0f} s after SIGKILL"}
        try:
            shutil.rmtree(directory)
            # Not the tags' word for it (a path to remove as root): the one place it can be, if made by us.
            short = _short_socket_dir(directory)
            if short.is_dir() and not short.is_symlink() and short.stat().st_uid in (os.geteuid(),
                                                                                     self._server.pw_uid):
                shutil.rmtree(short, ignore_errors=True)
        except OSError as error:
            return {"ok": False, "detail": f"{how}, but {directory} was not removed: {error}"}
        return {"ok": True, "detail": f"{how}; {directory} removed"}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One start/stop/failover/rebuild at a time per pair, across processes (pytest-xdist workers, the
        CLI, a drill). The lock lives in the state dir, so that dir is claimed first, and a planted link is
        not followed."""
        self._claim(self.state)
        with open(os.open(self.state / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def _other(node: str) -> str:
    return NODES[1 - NODES.index(node)]




def _short_socket_dir(directory: Path) -> Path:
    """The unix socket dir of a restore whose own `run/` would make too long a socket path."""
    return RELOCATION_BASE / f"harness-rs-{hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]}"


def _write_conf_file(conf: Path, settings: dict[str, str]) -> None:
    """Replace the stand-in's block at the end of a postgresql.conf (later lines win over initdb's defaults
    above it), keeping the file's owner."""
    text = conf.read_text()
    if CONF_MARKER in text:
        text = text[:text.index(CONF_MARKER)]
    conf.write_text(text + CONF_MARKER + "".join(f"{key} = {value}\n" for key, value in settings.items()))


def _pg_timestamp(epoch: float) -> str:
    """An epoch as PostgreSQL reads a timestamptz: UTC, with microseconds."""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _read_tags(directory: Path) -> dict[str, Any] | None:
    try:
        tags = json.loads((directory / "tags.json").read_text())
    except (OSError, ValueError):
        return None
    return tags if isinstance(tags, dict) else None


def _log_reason(log: Path) -> str | None:
    """Why a server ended, from its log: the last FATAL or PANIC message, not counting the refusals of
    connections made while it starts or stops ("the database system is starting up")."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        for level in ("PANIC:", "FATAL:"):
            if level in line:
                message = line.split(level, 1)[1].strip()
                if not message.startswith("the database system is"):
                    return message
    return None




def _conninfo(**values: str) -> str:
    """A libpq key/value connection string, every value quoted (a socket dir may hold spaces or quotes)."""
    return " ".join(f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
                    for key, value in values.items())


def _server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("as root, PostgreSQL runs as the 'postgres' user, which does not exist: install the "
                           "PostgreSQL server package, which creates it") from None


def state_dir(root: Path, server: pwd.struct_passwd) -> Path:
    """Where the pair's state lives: `<root>/postgres` whenever the server's user can reach it. Otherwise
    (as root, PostgreSQL runs as `postgres`, which cannot pass a 0700 parent such as a `mktemp -d` clone
    or /root) a directory under /tmp named after the resolved root, so two clones never share one, and
    short, so the unix socket path stays within its limit wherever the clone is. Once that directory
    exists it stays the answer, even if the clone's modes change meanwhile: `down` must find the servers
    `up` started (one that someone else owns is not taken as ours)."""
    root = root.resolve()
    relocated = RELOCATION_BASE / f"harness-pg-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}"
    if relocated.is_dir() and not relocated.is_symlink() and relocated.stat().st_uid in (os.geteuid(), server.pw_uid):
        return relocated
    if traversable(root, server):
        return root / "postgres"
    return relocated


def traversable(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` may pass through `path` and every directory above it, by the mode bits as the kernel
    reads them (the owner's, else the group's, else the others'). A part not made yet counts as passable:
    the stand-in makes its root 0755."""
    if user.pw_uid == 0:
        return True
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for directory in (*reversed(path.parents), path):
        try:
            info = directory.stat()
        except FileNotFoundError:
            return True
        if info.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def _find_bindir() -> Path:
    """The server programs are off PATH on Debian (/usr/lib/postgresql/N/bin): ask pg_config, else look."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10).stdout
        candidates.append(Path(out.strip()))
    versions = [path for path in Path("/usr/lib/postgresql").glob("*/bin") if path.parent.name.isdigit()]
    candidates += sorted(versions, key=lambda path: int(path.parent.name), reverse=True)
    if shutil.which("pg_ctl"):
        candidates.append(Path(shutil.which("pg_ctl")).parent)  # type: ignore[arg-type]
    for bindir in candidates:
        if (bindir / "pg_ctl").exists() and (bindir / "initdb").exists():
            return bindir
    raise RuntimeError("PostgreSQL server programs (initdb, pg_ctl) not found: install them, e.g. "
                       "`apt-get install postgresql-15`")


def _kill_all(find: Callable[[], list[int]], port: int | None) -> list[int] | None:
    """SIGKILL whatever `find()` returns until it returns nothing and nothing listens on `port`: None then,
    or what is still there after STOP_TIMEOUT."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:
        survivors = find()
        for survivor in survivors:
            try:
                os.kill(survivor, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not survivors and not (port is not None and accepts(port)):
            return None
        if time.monotonic() > deadline:
            return survivors
        time.sleep(0.01)




AUTO_CONF_HEADER = "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _conf_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5802/7677), computed client-side."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"
