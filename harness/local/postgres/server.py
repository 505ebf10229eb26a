"""The OS user PostgreSQL runs as: the one way the harness runs the server's programs and owns its files.

PostgreSQL refuses to run as root, so as root every server program runs as the `postgres` user (peer
authentication maps it to the superuser), which then owns the state dir.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from harness.local.postgres.config import COMMAND_TIMEOUT, STOP_TIMEOUT
from harness.util.net import accepts
from harness.util.proc import process_alive


def server_account() -> pwd.struct_passwd:
    """The user the servers run as: ours, or `postgres` when we are root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("as root, PostgreSQL runs as the 'postgres' user, which does not exist: install the "
                           "PostgreSQL server package, which creates it") from None


def find_bindir() -> Path:
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


class ServerUser:
    """Runs PostgreSQL's programs as `account` (with a timeout, PG* variables of the caller dropped) from
    `workdir` when it exists, and makes the files and dirs they need that user's."""

    def __init__(self, account: pwd.struct_passwd, bindir: Path, workdir: Path) -> None:
        self.account = account
        self.name = account.pw_name
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self._workdir = workdir

    def tool(self, program: str, *args: str, input: str | None = None, timeout: float = COMMAND_TIMEOUT,
             env: dict[str, str] | None = None) -> str:
        """Run a PostgreSQL program as the server's user, with a timeout; raise with its output on failure."""
        return self.run([str(self.bindir / program), *args], input=input, timeout=timeout, env=env)

    def run(self, command: list[str], input: str | None = None, timeout: float = COMMAND_TIMEOUT,
            env: dict[str, str] | None = None) -> str:
        """Run a program as the server's user, with a timeout; raise with its output on failure."""
        what = " ".join([Path(command[0]).name, *command[1:3]])
        if self.as_root:
            command = ["runuser", "-u", self.name, "--", *command]
        # PG* variables of the caller (PGHOST, PGPORT, PGDATA...) must not redirect these programs.
        environment = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        try:
            done = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout,
                                  env=environment | (env or {}), cwd=self._workdir if self._workdir.exists() else "/")
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{what} did not finish within {timeout:.0f} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def psql(self, socket_dir: Path, port: int, sql: str) -> str:
        """Run SQL as the superuser over the unix socket in `socket_dir` (a node's, a restore's); returns
        unaligned output."""
        return self.tool("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(socket_dir),
                         "-p", str(port), "-U", self.name, "-d", "postgres", input=sql, timeout=10)

    def can_write(self, path: Path) -> bool:
        """Whether the server's user may write in `path`, asked as that user: the mode bits are not the whole
        story (ACLs, security modules)."""
        if not self.as_root:
            return True
        probe = subprocess.run(["runuser", "-u", self.name, "--", "test", "-w", str(path)],
                               capture_output=True, timeout=COMMAND_TIMEOUT)
        return probe.returncode == 0

    def claim(self, path: Path) -> None:
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
            if owner not in (os.geteuid(), self.account.pw_uid):
                raise RuntimeError(f"{path} belongs to uid {owner}, not to '{self.name}' or to you: "
                                   "something else made it; remove it and start again")
            os.fchmod(fd, 0o700)
            if self.as_root:
                os.fchown(fd, self.account.pw_uid, self.account.pw_gid)
        finally:
            os.close(fd)

    def write_file(self, path: Path, text: str) -> None:
        """Write a file the server's user owns (a config file, a signal file, a restore's tags)."""
        path.write_text(text)
        if self.as_root:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def processes_in(self, data: Path, postmaster: int | None = None) -> list[int]:
        """Live processes of the server's user working in the data dir `data` (a server), or naming it on
        their command line (the copy of a base backup into it, when a restore was interrupted), `postmaster`
        first. Linux only (/proc)."""
        data_dir = str(data.resolve())
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if entry.stat().st_uid != self.account.pw_uid:
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


def kill_all(find: Callable[[], list[int]], port: int | None) -> list[int] | None:
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


def conninfo(**values: str) -> str:
    """A libpq key/value connection string, every value quoted (a socket dir may hold spaces or quotes)."""
    return " ".join(f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
                    for key, value in values.items())


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5802/7677), computed client-side: only it is sent,
    so the plain password never reaches a server log or a process list."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"
