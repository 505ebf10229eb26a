"""Where the pair lives: its settings, its state dir and the paths inside it.

Layout under the state dir (`root / "postgres"`, or a dir under /tmp, see `state_dir()`): `primary/` and
`standby/` (data dirs, named by their first role: after a failover the roles swap, each keeping its port;
`standby.signal` tells which is which), `archive/` (WAL), `log/` (one server log per node), `run/` (the unix
sockets, kept private instead of /var/run/postgresql) and `pair.json` (written last on first init: its
presence means the pair is complete). For point-in-time restore, as RDS keeps a daily snapshot and the WAL
since: `backups/base/` (a base backup of the primary, described by `backups/base.json`) and
`restores/<run id>/` (a drill's temporary restored server: `tags.json`, `data/`, `run/`, `log`), which
belong to the drill, not to the pair.
"""
from __future__ import annotations

import hashlib
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

START_TIMEOUT = 30.0  # seconds: each server start, the base backup and the wait for a synchronous standby
STOP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0  # initdb and the like
STANDBY_NAME = "standby"  # the standby's application_name, which synchronous_standby_names must match
REPLICATION_ROLE = "replicator"
NODES = ("primary", "standby")  # the data dirs, named by their first role; either may be the primary
# Where the state goes when the server's user cannot reach the project. /tmp rather than /var/tmp: it is
# traversable by every user everywhere, its path is short enough for the unix socket limit, and the state is
# disposable (`harness local down` removes it), so a dir the next boot clears is the right home for what a
# crash leaves. Not $TMPDIR: it may be private to the caller, which is the very problem.
RELOCATION_BASE = Path("/tmp")
SOCKET_PATH_MAX = 107  # bytes of a unix socket path: sun_path holds 108 with the final NUL


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

    def app_url(self, hosts: str, query: str) -> str:
        """The app user's libpq URI on `hosts` ("host:port,..."), with `query` as its parameters."""
        return (f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{hosts}/"
                f"{quote(self.database, safe='')}?{query}")


@dataclass(frozen=True)
class Layout:
    """The paths in the state dir, and each node's port (a node keeps its port whatever role it plays)."""
    state: Path
    primary_port: int
    standby_port: int

    def port(self, node: str) -> int:
        return self.primary_port if node == "primary" else self.standby_port

    @property
    def ports(self) -> tuple[int, int]:
        return self.primary_port, self.standby_port

    def data_dir(self, node: str) -> Path:
        return self.state / node

    def log_file(self, node: str) -> Path:
        return self.state / "log" / f"{node}.log"

    @property
    def run_dir(self) -> Path:
        """The nodes' unix sockets."""
        return self.state / "run"

    def socket(self, node: str) -> Path:
        return self.run_dir / f".s.PGSQL.{self.port(node)}"

    @property
    def archive_dir(self) -> Path:
        return self.state / "archive"

    @property
    def backups_dir(self) -> Path:
        return self.state / "backups"

    @property
    def backup_dir(self) -> Path:
        """The base backup itself (`backups_dir` also holds its description and the copies being replaced)."""
        return self.backups_dir / "base"

    @property
    def restores_dir(self) -> Path:
        return self.state / "restores"

    @property
    def pair_file(self) -> Path:
        return self.state / "pair.json"

    @property
    def rebuilding_file(self) -> Path:
        return self.state / "rebuilding"


def other(node: str) -> str:
    """The node that is not `node`."""
    return NODES[1 - NODES.index(node)]


def owned_dir(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether `path` is a real directory (not a link) of ours or of `user`: one someone else made in /tmp is
    never taken as ours."""
    return path.is_dir() and not path.is_symlink() and path.stat().st_uid in (os.geteuid(), user.pw_uid)


def state_dir(root: Path, server: pwd.struct_passwd) -> Path:
    """Where the pair's state lives: `<root>/postgres` whenever the server's user can reach it. Otherwise
    (as root, PostgreSQL runs as `postgres`, which cannot pass a 0700 parent such as a `mktemp -d` clone
    or /root) a directory under /tmp named after the resolved root, so two clones never share one, and
    short, so the unix socket path stays within its limit wherever the clone is. Once that directory
    exists it stays the answer, even if the clone's modes change meanwhile: `down` must find the servers
    `up` started (one that someone else owns is not taken as ours)."""
    root = root.resolve()
    relocated = RELOCATION_BASE / f"harness-pg-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}"
    if owned_dir(relocated, server):
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
