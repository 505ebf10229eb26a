"""The pair's two servers as processes and data dirs: creating the first one, starting, stopping and
killing a node, asking it SQL, and finding what of it still runs. Which node plays which role is
replication's business (see `replication.py`)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from harness.local.postgres.config import (NODES, REPLICATION_ROLE, SOCKET_PATH_MAX, STANDBY_NAME, START_TIMEOUT,
                                           STOP_TIMEOUT, DatabaseConfig, Layout)
from harness.local.postgres.server import ServerUser, ident, kill_all, scram_verifier
from harness.local.postgres.settings import AUTO_CONF_HEADER, node_settings, write_conf_file
from harness.util.proc import process_alive
from harness.util.wait import WaitTimeout, until


class Cluster:
    """The nodes of one pair, in `layout`, run as `server`."""

    def __init__(self, config: DatabaseConfig, layout: Layout, server: ServerUser) -> None:
        self.config = config
        self.layout = layout
        self.server = server

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One start/stop/failover/rebuild at a time per pair, across processes (pytest-xdist workers, the
        CLI, a drill). The lock lives in the state dir, so that dir is claimed first, and a planted link is
        not followed."""
        self.server.claim(self.layout.state)
        with open(os.open(self.layout.state / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def status(self) -> dict[str, Any]:
        """See `PostgresPair.status()`."""
        result: dict[str, Any] = {}
        for node in NODES:
            pid = self.pid(node)
            role = "standby" if (self.layout.data_dir(node) / "standby.signal").exists() else "primary"
            entry: dict[str, Any] = {"running": pid is not None, "pid": pid, "port": self.layout.port(node),
                                     "role": role, "log": str(self.layout.log_file(node)),
                                     "state_dir": str(self.layout.state)}
            if role == "primary":
                entry["standby_sync_state"] = self.sync_state(node) if pid else None
            result[node] = entry
        return result

    # ---------------------------------------------------------------- first init

    def create_primary(self) -> None:
        """initdb the primary, then start it and create the roles and the database. Anything a previous
        interrupted attempt left is discarded first."""
        self._prepare_state_dir()
        for node in NODES:
            self.stop_node(node, mode="immediate")
            shutil.rmtree(self.layout.data_dir(node), ignore_errors=True)
        self.layout.rebuilding_file.unlink(missing_ok=True)
        shutil.rmtree(self.layout.backups_dir, ignore_errors=True)  # of a cluster that is no more
        primary = self.layout.data_dir("primary")
        # --no-sync (here and for the base backup): a stand-in needs no crash safety while it is being
        # built, and skipping the fsync of every file is most of initdb's time on a slow disk.
        self.server.tool("initdb", "-D", str(primary), "-U", self.server.name, "--encoding=UTF8", "--locale=C",
                         "--auth-local=peer", "--auth-host=scram-sha-256", "--no-sync")
        self.write_conf("primary", node_settings(self.layout, "primary", "primary"))
        (primary / "pg_hba.conf").write_text(
            "# Local stand-in: loopback only. Unix sockets live in a 0700 dir of the server's user.\n"
            "local  all          all                        peer\n"
            "# Replication is trusted for its dedicated role, and only from 127.0.0.1: nothing else can\n"
            "# reach a loopback port, and it spares the standby a stored password.\n"
            f"host   replication  {REPLICATION_ROLE}  127.0.0.1/32  trust\n"
            "host   all          all                        127.0.0.1/32  scram-sha-256\n")
        self.start_node("primary")
        user, database = ident(self.config.user), ident(self.config.database)
        self.psql("primary",
                  "SET synchronous_commit = local;\n"  # no standby exists yet to wait for
                  f"CREATE ROLE {REPLICATION_ROLE} REPLICATION LOGIN;\n"
                  f"CREATE ROLE {user} LOGIN;\n"
                  f"CREATE DATABASE {database} OWNER {user};\n")

    def _prepare_state_dir(self) -> None:
        """Create the state dirs owned by the server's user, and prove that user can reach them: the mode
        bits `state_dir()` judged by are not the whole story (ACLs, security modules)."""
        state = self.layout.state
        socket_path = self.layout.run_dir / f".s.PGSQL.{max(self.layout.ports)}"
        if len(str(socket_path).encode()) > SOCKET_PATH_MAX:
            raise RuntimeError(f"state dir {state} is too deep: the unix socket path {socket_path} would "
                               "exceed the 107-byte limit; use a shorter root")
        self.server.claim(state)
        if not self.server.can_write(state):
            user = self.server.name
            raise RuntimeError(
                f"PostgreSQL runs as '{user}' (it refuses root), and that user cannot reach "
                f"{state} although the mode bits of its parents allow it (an ACL or a security module?): "
                f"grant '{user}' search access to its parents, or use another root")
        for sub in ("archive", "log", "run"):
            self.server.claim(state / sub)

    def _settings(self) -> dict[str, Any]:
        c = self.config
        return {"primary_port": c.primary_port, "standby_port": c.standby_port, "user": c.user,
                "database": c.database}

    def record_settings(self) -> None:
        """Write `pair.json`, the last step of the first init: from then on the pair is complete."""
        self.layout.pair_file.write_text(json.dumps(self._settings(), indent=2) + "\n")

    def check_settings(self) -> None:
        stored = json.loads(self.layout.pair_file.read_text())
        if stored != self._settings():
            raise RuntimeError(f"the pair in {self.layout.state} was initialised with {stored}, not "
                               f"{self._settings()}: use those settings, or remove {self.layout.state} to start "
                               "afresh")

    # ---------------------------------------------------------------- configuration

    def valid(self, node: str) -> bool:
        """Whether the node's data dir holds a cluster (not missing, nor emptied for a base backup)."""
        return (self.layout.data_dir(node) / "global" / "pg_control").exists()

    def write_conf(self, node: str, settings: dict[str, str]) -> None:
        """Replace the stand-in's block at the end of the node's postgresql.conf (see `write_conf_file`)."""
        write_conf_file(self.layout.data_dir(node) / "postgresql.conf", settings)

    def reset_auto_conf(self, node: str) -> None:
        """Empty a stopped node's postgresql.auto.conf (ALTER SYSTEM RESET ALL, without a server)."""
        self.server.write_file(self.layout.data_dir(node) / "postgresql.auto.conf", AUTO_CONF_HEADER)

    def set_app_password(self, primary: str) -> None:
        """The caller's password is authoritative, so it is set on every start. Only a SCRAM verifier is
        sent: the plain password never reaches the server log or a process list."""
        verifier = scram_verifier(self.config.password)
        self.psql(primary,
                  "SET synchronous_commit = local;\n"  # the standby may not run yet
                  f"ALTER ROLE {ident(self.config.user)} PASSWORD '{verifier}';\n")

    # ---------------------------------------------------------------- running nodes

    def psql(self, node: str, sql: str) -> str:
        """Run SQL as the superuser over the node's private unix socket; returns unaligned output."""
        return self.server.psql(self.layout.run_dir, self.layout.port(node), sql)

    def start_node(self, node: str) -> None:
        if self.pid(node) is not None:
            return
        self.clear_stale_locks(node)
        log = self.layout.log_file(node)
        try:
            self.server.tool("pg_ctl", "start", "-D", str(self.layout.data_dir(node)), "-l", str(log),
                             "-w", "-t", str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 5)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n--- last lines of {log} ---\n{self.log_tail(node)}") from None

    def stop_node(self, node: str, mode: str = "fast") -> None:
        if self.pid(node) is None:
            return
        command = ["pg_ctl", "stop", "-D", str(self.layout.data_dir(node)), "-w", "-t", str(int(STOP_TIMEOUT))]
        try:
            self.server.tool(*command, "-m", mode, timeout=STOP_TIMEOUT + 5)
        except RuntimeError:
            if mode == "immediate":
                raise
            self.server.tool(*command, "-m", "immediate", timeout=STOP_TIMEOUT + 5)

    def kill(self, node: str) -> float:
        """SIGKILL the node's postmaster and every process of that server (an AZ gone: nothing shuts down
        cleanly, nothing sends a last WAL record), wait until none is left and its port refuses, and clear the
        lock files the dead server left. Returns when the kill was sent (epoch seconds)."""
        pid = self.pid(node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        # Its children (backends, walsender, archiver and what it runs) would exit on their own once they
        # notice the postmaster's death; an AZ loss takes them at the same instant.
        port = self.layout.port(node)
        survivors = kill_all(lambda: self._processes(node), port)
        if survivors is not None:
            raise RuntimeError(f"the {node} node of {self.layout.state} still has processes {survivors} or a "
                               f"listener on port {port} {STOP_TIMEOUT:.0f} s after SIGKILL")
        self.clear_stale_locks(node)
        return killed_at

    def pid(self, node: str) -> int | None:
        """The postmaster's pid when it runs (the check pg_ctl status makes, without a process)."""
        try:
            pid = int((self.layout.data_dir(node) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def _processes(self, node: str) -> list[int]:
        """Live processes of the node's server, the postmaster first: every one of them (and whatever the
        archiver runs) works in the data dir, as the server's user."""
        return self.server.processes_in(self.layout.data_dir(node), self.pid(node))

    def clear_stale_locks(self, node: str) -> None:
        """Remove the lock files a killed server left (postmaster.pid, the socket's lock) once none of its
        processes is left. PostgreSQL clears them itself, unless the dead pid is a zombie that the container's
        init has not reaped yet: kill(pid, 0) then succeeds, and the server refuses to start."""
        if self.pid(node) is not None or self._processes(node):
            return
        (self.layout.data_dir(node) / "postmaster.pid").unlink(missing_ok=True)
        socket = self.layout.socket(node)
        socket_lock = socket.with_name(socket.name + ".lock")
        try:
            owner = int(socket_lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        if not process_alive(owner):
            socket_lock.unlink(missing_ok=True)
            socket.unlink(missing_ok=True)

    def sync_state(self, node: str) -> str | None:
        """The standby's sync_state as `node` sees it; None also while `node` starts or shuts down."""
        try:
            out = self.psql(node, "SELECT sync_state FROM pg_stat_replication "
                                  f"WHERE application_name = '{STANDBY_NAME}' AND state = 'streaming';")
        except RuntimeError:
            return None
        return out.strip() or None

    def wait_until(self, check: Callable[[], Any], what: str, node: str, timeout: float = START_TIMEOUT) -> None:
        """Wait for `check()`; past `timeout`, fail with `what` and the end of `node`'s log."""
        try:
            until(check, timeout, what, poll_s=0.05)
        except WaitTimeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                               f"--- last lines of {self.layout.log_file(node)} ---\n{self.log_tail(node)}") from None

    def log_tail(self, node: str, lines: int = 20) -> str:
        try:
            return "\n".join(self.layout.log_file(node).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
