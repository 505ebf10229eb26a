"""A clone in a private directory (`mktemp -d` is 0700, as is /root): as root, PostgreSQL runs as `postgres`,
which cannot pass such a parent, so the database state lives under /tmp instead, named after the clone;
`status` says where, and `down` removes it along with everything else.

The decision is tested alone (fast, any user); the CLI round trip needs root and runs two cold `up`s (about 40 s).
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from harness.util.net import free_port

from support.ports import port_offset, ports_of
from support.suites import ROOT
from harness.local.postgres import RELOCATION_BASE, DatabaseConfig, PostgresPair, state_dir
from harness.util.proc import process_alive
from harness.target import endpoint_listening

pytestmark = [pytest.mark.postgres, pytest.mark.stand_in]

# Nobody owns what these tests make, nor is in its group: only the "others" bits let it through.
STRANGER = pwd.struct_passwd(("stranger", "x", 54321, 54321, "", "/", "/bin/false"))


@pytest.fixture
def offset() -> Iterator[int]:
    """A block of stand-in ports no other test process holds (support.ports)."""
    with port_offset() as held:
        yield held


@pytest.fixture
def private_root() -> Iterator[Path]:
    """What `mktemp -d` gives: a fresh 0700 dir under /tmp (pytest's tmp_path sits below 0700 parents too,
    which would hide whether the root itself is the obstacle)."""
    root = Path(tempfile.mkdtemp(prefix="dg-private-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_a_reachable_root_keeps_its_state_inside(private_root: Path) -> None:
    private_root.chmod(0o755)
    assert state_dir(private_root, STRANGER) == private_root / "postgres"
    assert state_dir(private_root / "not-made-yet", STRANGER) == private_root / "not-made-yet" / "postgres"


def test_the_owner_of_a_private_root_keeps_its_state_inside(private_root: Path) -> None:
    """A developer who is not root runs PostgreSQL as themselves, and passes their own 0700 dirs."""
    me = pwd.struct_passwd(("me", "x", os.geteuid(), os.getegid(), "", "/", "/bin/false"))
    assert state_dir(private_root, me) == private_root / "postgres"


def test_a_relocated_state_stays_where_it_is_when_the_root_opens_up(private_root: Path) -> None:
    """`down` must find what `up` started, even if the clone's modes changed in between."""
    state = state_dir(private_root, STRANGER)
    state.mkdir(mode=0o700)
    try:
        private_root.chmod(0o755)
        me = pwd.struct_passwd(("me", "x", os.geteuid(), os.getegid(), "", "/", "/bin/false"))
        assert state_dir(private_root, STRANGER) == state == state_dir(private_root, me)
    finally:
        state.rmdir()
    assert state_dir(private_root, STRANGER) == private_root / "postgres"


def test_an_unreachable_root_moves_its_state_to_a_short_dir_of_its_own(private_root: Path) -> None:
    other = Path(tempfile.mkdtemp(prefix="dg-private-", dir="/tmp"))
    try:
        state = state_dir(private_root, STRANGER)
        assert state.parent == RELOCATION_BASE and state.name.startswith("harness-pg-")
        assert state_dir(private_root / "deeper" / "..", STRANGER) == state  # the same root, however spelt
        assert state_dir(other, STRANGER) != state  # two clones never share one
        assert state_dir(private_root / "deeper", STRANGER) != state  # nor does a root below it
        assert len(str(state / "run" / ".s.PGSQL.65535").encode()) <= 107
    finally:
        shutil.rmtree(other)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to the `postgres` user")
@pytest.mark.parametrize("planted", ["a symlink", "a dir of another user"])
def test_what_is_planted_where_the_state_goes_is_refused(private_root: Path, planted: str) -> None:
    pair = PostgresPair(DatabaseConfig(root=private_root, password="unused"))
    assert pair.relocated
    decoy = Path(tempfile.mkdtemp(prefix="dg-decoy-", dir="/tmp"))
    try:
        if planted == "a symlink":
            pair.state.symlink_to(decoy)
        else:
            pair.state.mkdir()
            os.chown(pair.state, STRANGER.pw_uid, STRANGER.pw_gid)
        with pytest.raises(RuntimeError, match="symlink|belongs to uid 54321"):
            pair.start()
        assert decoy.stat().st_uid == 0 and list(decoy.iterdir()) == []  # nothing followed the link
    finally:
        if pair.state.is_symlink():
            pair.state.unlink()
        else:
            shutil.rmtree(pair.state, ignore_errors=True)
        shutil.rmtree(decoy)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to the `postgres` user")
def test_local_up_in_a_private_clone_works_and_down_leaves_nothing(private_root: Path, offset: int) -> None:
    """Twice: the second `up` finds no database (the first `down` removed it) and must start afresh."""
    assert private_root.stat().st_mode & 0o777 == 0o700
    endpoint = f"http://127.0.0.1:{free_port()}"
    cli = [sys.executable, "-m", "harness.cli", "local"]
    args = ["--endpoint-url", endpoint, "--port-offset", str(offset), "--plan", str(ROOT / "plan" / "dougust.toml")]

    def local(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, action, *args], cwd=private_root, capture_output=True, text=True, timeout=120)

    for _ in range(2):
        try:
            up = local("up")
            assert up.returncode == 0, up.stderr
            status = json.loads(local("status").stdout)
            state = Path(status["database"]["primary"]["state_dir"])
            assert status["database"]["standby"]["state_dir"] == str(state)
            assert state.parent == RELOCATION_BASE and state.is_dir()
            assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (pwd.getpwnam("postgres").pw_uid, 0o700)
            assert f"database  {state}" in up.stdout
            pids = [status["emulator"]["pid"], status["tasks"]["supervisor"], status["load_balancer"]["pid"],
                    *(t["pid"] for t in status["tasks"]["tasks"]), *(n["pid"] for n in status["database"].values())]
            assert all(pids), status
        finally:
            down = local("down")
        assert down.returncode == 0, down.stderr
        assert not [port for port in ports_of(offset) if endpoint_listening(f"http://127.0.0.1:{port}")]
        assert not endpoint_listening(endpoint)
        assert not [pid for pid in pids if process_alive(pid)]
        assert not state.exists()
