"""Point-in-time restore into temporary servers, as RDS's restore_db_instance_to_point_in_time: the base
backup copied to `restores/<run id>/` and recovered from the WAL archive up to a target time. A restore is a
drill's, not the pair's: tagged when made, so a leftover is always found, and removed by its drill or by a
sweep of expired ones."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable

from harness.drills import judges
from harness.drills.model import TAG_DRILL, TAG_ENV, TAG_EXPIRES, TAG_RUN
from harness.local.postgres.backup import BaseBackups
from harness.local.postgres.config import (COMMAND_TIMEOUT, RELOCATION_BASE, SOCKET_PATH_MAX, STOP_TIMEOUT,
                                           DatabaseConfig, Layout, owned_dir)
from harness.local.postgres.server import ServerUser, ident, kill_all, scram_verifier
from harness.local.postgres.settings import AUTO_CONF_HEADER, conf_str, restore_command, write_conf_file
from harness.util.net import free_port
from harness.util.proc import process_alive

RESTORE_TIMEOUT = 120.0  # seconds: a restored server's start and its recovery up to the target, together
# The longest `discard_restore()` takes: pg_ctl's stop, then SIGKILL and the wait for the port to refuse.
DISCARD_TIMEOUT = 2 * STOP_TIMEOUT + 5
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # one path component, never `.` or `..`


class Restores:
    """The restored servers under `layout.restores_dir`, made from `backups` while holding `lock` (the pair's,
    so the base backup is not replaced during the copy)."""

    def __init__(self, config: DatabaseConfig, layout: Layout, server: ServerUser, backups: BaseBackups,
                 lock: Callable[[], AbstractContextManager[None]]) -> None:
        self.config = config
        self.layout = layout
        self.server = server
        self.backups = backups
        self._lock = lock

    def create(self, target_time: float, run_id: str, drill: str, expires: float,
               port: int | None = None, env: str | None = None) -> dict[str, Any]:
        """See `PostgresPair.restore()`."""
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            raise RuntimeError(f"restore name {run_id!r} is not one short path component "
                               "(letters, digits, '.', '_', '-'; at most 64)")
        began = time.monotonic()
        directory = self.layout.restores_dir / run_id
        if os.path.lexists(directory):
            raise RuntimeError(f"a restore named {run_id} exists already in {directory}: discard it first")
        record = self.backups.latest()
        if record is None:
            raise RuntimeError(f"the pair in {self.layout.state} has no base backup to restore from: run start() "
                               "or take_base_backup()")
        target = _pg_timestamp(target_time)
        if target_time < record["taken_at"]:
            raise RuntimeError(f"restore point {target} is before the oldest base backup "
                               f"({_pg_timestamp(record['taken_at'])}): it cannot be reached")
        if port is None:
            port = free_port(exclude=set(self.layout.ports))
        socket_dir = directory / "run"
        if len(str(socket_dir / f".s.PGSQL.{port}").encode()) > SOCKET_PATH_MAX:
            # A deep state dir and a long name: a dir of its own under /tmp rather than a socket path the
            # kernel refuses (named after the restore's dir, so the discard finds it).
            socket_dir = _short_socket_dir(directory)
        data, log = directory / "data", directory / "log"
        self.server.claim(self.layout.restores_dir)
        try:
            self.server.claim(directory)
            self.server.write_file(directory / "tags.json", json.dumps({
                TAG_DRILL: drill, TAG_RUN: run_id, **({TAG_ENV: env} if env is not None else {}),
                TAG_EXPIRES: dt.datetime.fromtimestamp(expires, dt.timezone.utc).isoformat(timespec="seconds"),
                "port": port, "created_at": time.time(), "socket_dir": str(socket_dir)}, indent=2) + "\n")
            self.server.claim(socket_dir)
            with self._lock():  # not while take_base_backup() replaces the copy
                self.server.run(["cp", "-a", "--", str(self.layout.backup_dir), str(data)], timeout=COMMAND_TIMEOUT)
            data.chmod(0o700)
            for name in ("standby.signal", "recovery.signal", "postmaster.pid", "postmaster.opts"):
                (data / name).unlink(missing_ok=True)
            self.server.write_file(data / "recovery.signal", "")
            self.server.write_file(data / "postgresql.auto.conf", AUTO_CONF_HEADER)
            # The primary's own block is replaced (it names the pair's port, socket and archiving).
            write_conf_file(data / "postgresql.conf", {
                "listen_addresses": "'127.0.0.1'",
                "port": str(port),
                "unix_socket_directories": conf_str(str(socket_dir)),
                "hot_standby": "on",  # so its progress can be asked while it recovers
                "archive_mode": "off",  # a copy: its WAL must never mix with the pair's archive
                "synchronous_standby_names": "''",
                "restore_command": conf_str(restore_command(self.layout.archive_dir)),
                "recovery_target_time": conf_str(target),
                "recovery_target_action": "'promote'",
                "recovery_target_timeline": "'latest'",  # the archive's .history files lead past failovers
            })
            # One deadline for the start and the recovery: a promotion is polled for, each time asking
            # whether the server is still alive, which a plain wait for a condition would not tell.
            deadline = time.monotonic() + RESTORE_TIMEOUT
            try:
                self.server.tool("pg_ctl", "start", "-D", str(data), "-l", str(log), "-w",
                                 "-t", str(int(RESTORE_TIMEOUT)), timeout=RESTORE_TIMEOUT + 5)
            except RuntimeError as error:
                raise RuntimeError(_log_reason(log) or str(error).splitlines()[0]) from None
            while True:
                pid = self._pid(data)
                if pid is None:
                    raise RuntimeError(_log_reason(log) or "the server stopped during recovery")
                try:
                    in_recovery = self.server.psql(socket_dir, port, "SELECT pg_is_in_recovery();").strip()
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
            self.server.psql(socket_dir, port, f"ALTER ROLE {ident(self.config.user)} "
                                               f"PASSWORD '{scram_verifier(self.config.password)}';")
        except BaseException as error:
            cleanup = self._discard(directory)
            if not isinstance(error, Exception):
                raise  # Ctrl-C, SIGTERM: cleaned up, and passed on as it is
            reason = " ".join(str(error).split()) or type(error).__name__
            if not cleanup["ok"]:
                reason += f" (and its removal failed: {' '.join(cleanup['detail'].split())})"
            raise RuntimeError(f"restore {run_id} to {target} failed: {reason}") from None
        return {"name": run_id, "dir": str(directory), "port": port,
                "dsn": self.config.app_url(f"127.0.0.1:{port}", "connect_timeout=5"),
                "pid": pid, "recovered_at": recovered_at, "log": str(log), "seconds": time.monotonic() - began}

    def discard(self, run_id: str) -> dict[str, Any]:
        """See `PostgresPair.discard_restore()`."""
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            return {"ok": False, "detail": f"restore name {run_id!r} is not a restore's name"}
        return self._discard(self.layout.restores_dir / run_id)

    def tagged(self) -> list[dict[str, Any]]:
        """See `PostgresPair.restores()`."""
        found = []
        for directory in self._dirs():
            tags = _read_tags(directory)
            if tags is not None:
                found.append({**tags, "name": directory.name, "dir": str(directory),
                              "running": self._pid(directory / "data") is not None})
        return found

    def sweep(self, now: float, env: str | None = None) -> list[dict[str, Any]]:
        """See `PostgresPair.sweep_restores()`."""
        report = []
        for directory in self._dirs():
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

    def _dirs(self) -> list[Path]:
        try:
            return sorted(path for path in self.layout.restores_dir.iterdir()
                          if path.is_dir() and not path.is_symlink())
        except OSError:
            return []

    def _pid(self, data: Path) -> int | None:
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
        """Stop the restored server in `directory` and remove it all (see `PostgresPair.discard_restore()`)."""
        if not os.path.lexists(directory):
            return {"ok": True, "detail": f"nothing to discard at {directory}"}
        tags = _read_tags(directory) or {}
        data = directory / "data"
        port = tags.get("port")
        postmaster = self._pid(data)
        found = self.server.processes_in(data, postmaster)
        how = "no server was running"
        if postmaster is not None:
            how = f"server {postmaster} stopped"
            try:
                self.server.tool("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w",
                                 "-t", str(int(STOP_TIMEOUT)), timeout=STOP_TIMEOUT + 5)
            except RuntimeError:
                how = f"server {postmaster} killed"
        elif found:
            how = f"the processes left of a dead server killed ({len(found)})"
        if found:
            # What pg_ctl left (or all of it, the postmaster dead or deaf): its children, a restore_command.
            survivors = kill_all(lambda: self.server.processes_in(data), port if isinstance(port, int) else None)
            if survivors is not None:
                return {"ok": False, "detail": f"{directory.name}: processes {survivors} or a listener on "
                                               f"port {port} left {STOP_TIMEOUT:.0f} s after SIGKILL"}
        try:
            shutil.rmtree(directory)
            # Not the tags' word for it (a path to remove as root): the one place it can be, if made by us.
            short = _short_socket_dir(directory)
            if owned_dir(short, self.server.account):
                shutil.rmtree(short, ignore_errors=True)
        except OSError as error:
            return {"ok": False, "detail": f"{how}, but {directory} was not removed: {error}"}
        return {"ok": True, "detail": f"{how}; {directory} removed"}


def _short_socket_dir(directory: Path) -> Path:
    """The unix socket dir of a restore whose own `run/` would make too long a socket path."""
    return RELOCATION_BASE / f"harness-rs-{hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]}"


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
