"""The local stand-in of RDS PostgreSQL Multi-AZ: a primary and a synchronous streaming standby on loopback.

RDS Multi-AZ commits only once the standby in the other AZ has the WAL, fails over by promoting that
standby, and archives WAL for point-in-time restore. The stand-in reproduces exactly those three
properties, so the smoke and DR suites exercise the same behaviour locally: `synchronous_standby_names`
names the standby, `promote_standby()` is the failover, and every WAL segment is copied to `archive_dir`.

Layout under `root / "postgres"`: `primary/` and `standby/` (data dirs), `archive/` (WAL), `log/` (one
server log per node), `run/` (the unix sockets, kept private instead of /var/run/postgresql) and
`pair.json` (written last on first init: its presence means the pair is complete). PostgreSQL refuses to
run as root, so as root every server program runs as the `postgres` user, which then owns the state dir.
When that user cannot reach `root` (a 0700 parent: a `mktemp -d` clone, /root), `state_dir()` moves the
state to a directory of its own under /tmp instead.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

START_TIMEOUT = 30.0  # seconds: each server start, the base backup and the wait for a synchronous standby
STOP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0  # initdb and the like
STANDBY_NAME = "standby"  # the standby's application_name, which synchronous_standby_names must match
REPLICATION_ROLE = "replicator"
NODES = ("primary", "standby")
# Where the state goes when the server's user cannot reach the project. /tmp rather than /var/tmp: it is
# traversable by every user everywhere, its path is short enough for the unix socket limit, and the state is
# disposable (`harness local down` removes it), so a dir the next boot clears is the right home for what a
# crash leaves. Not $TMPDIR: it may be private to the caller, which is the very problem.
RELOCATION_BASE = Path("/tmp")


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

    # ---------------------------------------------------------------- public API

    def start(self) -> None:
        """Initialise on first use, then start whichever node is down, and return once both accept
        connections and the standby streams synchronously. A no-op (but for the checks) when already up."""
        with self._locked():
            if not (self.state / "pair.json").exists():
                self._initialise()
            self._check_settings()
            if not (self.data_dir("standby") / "standby.signal").exists():
                raise RuntimeError(
                    f"the standby in {self.state} was promoted (a failover drill), so the pair has no standby "
                    f"any more: stop it and remove {self.state} to start a fresh pair")
            self._start_node("primary")
            self._set_app_password()
            self._start_node("standby")
            self._wait_for_sync()

    def stop(self) -> None:
        """Fast shutdown of both nodes (the primary first, so the standby receives its final WAL)."""
        with self._locked():
            for node in NODES:
                self._stop_node(node)

    def status(self) -> dict[str, Any]:
        """Per node (keyed by the node's initial name): running, pid, port, role, log file and the state dir
        (in each node's entry, so every value stays a node); for a running primary also `standby_sync_state`
        ('sync' when healthy, None when no standby is connected). After `promote_standby()` the node named
        "standby" reports role 'primary'."""
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

    def dsn(self) -> str:
        """A libpq multi-host URI: clients land on whichever node accepts writes, as an RDS endpoint does
        after a failover. connect_timeout bounds each attempt so a hung node cannot hang a client."""
        c = self.config
        hosts = f"127.0.0.1:{c.primary_port},127.0.0.1:{c.standby_port}"
        return (f"postgresql://{quote(c.user, safe='')}:{quote(c.password, safe='')}@{hosts}/"
                f"{quote(c.database, safe='')}?target_session_attrs=read-write&connect_timeout=5")

    def promote_standby(self) -> None:
        """Promote the standby (the failover drill's action). Fencing the old primary is the drill's job:
        while it runs, the DSN still prefers it, as it is listed first."""
        with self._locked():
            self._server_tool("pg_ctl", "promote", "-D", str(self.data_dir("standby")), "-w",
                              "-t", str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 5)

    def switch_wal(self) -> Path:
        """Close the current WAL segment on the running primary and return it once archived. RDS archives on
        its own every five minutes; a restore drill needs the archive to hold every commit so far, now."""
        primaries = [node for node, entry in self.status().items()
                     if entry["running"] and entry["role"] == "primary"]
        if not primaries:
            raise RuntimeError(f"no primary of the pair in {self.state} is running")
        name = self._psql(primaries[0], "SELECT pg_walfile_name(pg_switch_wal());").strip()
        segment = self.archive_dir / name
        deadline = time.monotonic() + START_TIMEOUT
        while not segment.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{segment.name} was not archived within {START_TIMEOUT:.0f} s\n"
                                   f"--- last lines of {self.log_file(primaries[0])} ---\n"
                                   f"{self._log_tail(primaries[0])}")
            time.sleep(0.05)
        return segment

    # ---------------------------------------------------------------- first init

    def _initialise(self) -> None:
        """initdb the primary, create the roles and the database, base-backup the standby. Anything a
        previous interrupted attempt left is discarded first; `pair.json` is written only at the end."""
        self._prepare_state_dir()
        for node in NODES:
            self._stop_node(node, mode="immediate")
            shutil.rmtree(self.data_dir(node), ignore_errors=True)
        primary = self.data_dir("primary")
        # --no-sync (here and for the base backup): a stand-in needs no crash safety while it is being
        # built, and skipping the fsync of every file is most of initdb's time on a slow disk.
        self._server_tool("initdb", "-D", str(primary), "-U", self.os_user, "--encoding=UTF8", "--locale=C",
                          "--auth-local=peer", "--auth-host=scram-sha-256", "--no-sync")
        self._append_conf("primary", self._primary_settings())
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
        standby, archived = self.data_dir("standby"), self._archive_path("%f")
        # -R writes standby.signal and primary_conninfo (with our application_name, which the sync name
        # matches); --checkpoint=fast, or it waits for the next scheduled checkpoint (minutes).
        self._server_tool(
            "pg_basebackup", "-D", str(standby), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync", "-w",
            "-d", f"host=127.0.0.1 port={self.config.primary_port} user={REPLICATION_ROLE} "
                  f"application_name={STANDBY_NAME}", timeout=START_TIMEOUT)
        self._append_conf("standby", {
            "port": str(self.config.standby_port),
            # Once promoted, this node has no standby of its own; waiting for one would block every commit.
            "synchronous_standby_names": "''",
            # Catch up from the archive when the primary no longer keeps the WAL the standby needs.
            # (test -f first: a segment not archived yet is the normal case, not an error for the log.)
            "restore_command": _conf_str(f"test -f {archived} && cp {archived} %p"),
        })
        (self.state / "pair.json").write_text(json.dumps(self._settings(), indent=2) + "\n")

    def _primary_settings(self) -> dict[str, str]:
        archived = self._archive_path("%f")
        return {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.config.primary_port),
            "unix_socket_directories": _conf_str(str(self.state / "run")),
            "wal_level": "replica",
            "synchronous_commit": "on",
            "synchronous_standby_names": _conf_str(STANDBY_NAME),
            "max_wal_senders": "5",
            "wal_keep_size": "'128MB'",
            "hot_standby": "on",
            "wal_log_hints": "on",  # lets a later drill rejoin the old primary with pg_rewind
            "archive_mode": "on",
            # Never overwrite an archived segment; copy then rename, so an interrupted cp leaves no
            # partial file under the final name (which `test ! -f` would then refuse forever).
            "archive_command": _conf_str(
                f"test ! -f {archived} && cp %p {archived}.tmp && mv {archived}.tmp {archived}"),
        }

    def _archive_path(self, name: str) -> str:
        # % is the placeholder character in archive/restore commands, so a literal one is doubled.
        return shlex.quote(str(self.archive_dir).replace("%", "%%")) + "/" + name

    def _append_conf(self, node: str, settings: dict[str, str]) -> None:
        """Later lines of postgresql.conf win, so appending overrides initdb's (or the copied) defaults."""
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with (self.data_dir(node) / "postgresql.conf").open("a") as conf:
            conf.write("\n# --- harness local stand-in ---\n" + lines)

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

    # ---------------------------------------------------------------- running nodes

    def _start_node(self, node: str) -> None:
        if self._pid(node) is not None:
            return
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

    def _set_app_password(self) -> None:
        """The caller's password is authoritative, so it is set on every start. Only a SCRAM verifier is
        sent: the plain password never reaches the server log or a process list."""
        verifier = _scram_verifier(self.config.password)
        self._psql("primary", "SET synchronous_commit = local;\n"  # the standby may not run yet
                              f"ALTER ROLE {_ident(self.config.user)} PASSWORD '{verifier}';\n")

    def _wait_for_sync(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while (state := self._sync_state("primary")) != "sync":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby is not streaming synchronously after {START_TIMEOUT:.0f} s "
                                   f"(sync_state={state!r})\n--- last lines of {self.log_file('standby')} ---\n"
                                   f"{self._log_tail('standby')}")
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
        return self._server_tool("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h",
                                 str(self.state / "run"), "-p", str(self._ports[node]), "-U", self.os_user,
                                 "-d", "postgres", input=sql, timeout=10)

    def _server_tool(self, program: str, *args: str, input: str | None = None,
                     timeout: float = COMMAND_TIMEOUT) -> str:
        """Run a PostgreSQL program as the server's user, with a timeout; raise with its output on failure."""
        command = [str(self.bindir / program), *args]
        if self._as_root:
            command = ["runuser", "-u", self.os_user, "--", *command]
        # PG* variables of the caller (PGHOST, PGPORT, PGDATA...) must not redirect these programs.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        try:
            done = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout,
                                  env=env, cwd=self.state if self.state.exists() else "/")
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{program} {' '.join(args[:2])} did not finish within {timeout:.0f} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args[:2])} failed (exit {done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()}")
        return done.stdout

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One start/stop/promote at a time per pair, across processes (pytest-xdist workers, the CLI).
        The lock lives in the state dir, so that dir is claimed first, and a planted link is not followed."""
        self._claim(self.state)
        with open(os.open(self.state / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


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


def process_alive(pid: int) -> bool:
    """kill(pid, 0) also succeeds for a zombie, and a postmaster that crashed or was killed stays one until
    its parent (often a container's PID 1, which may reap lazily) collects it: on Linux, ask /proc."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill's answer stands


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
