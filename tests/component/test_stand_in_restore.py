"""The database stand-in's point-in-time restore for DRILL-02, against real PostgreSQL: the base backup that
`start()` takes (RDS's snapshot) plus the WAL archive bring a temporary server to a chosen moment, also across
a failover's new timeline; a target the archive cannot reach fails in one line and leaves nothing; discarding
and sweeping leave no process, no listener and no directory, even of a server killed with SIGKILL.

One pair for the module (about 7 s to build); each test writes a table of its own and leaves the pair as it
found it: healthy, its archive covering its base backup onward. About 30 s in all.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from harness.util.net import free_port

from support.stand_in import pair_in_tmp
from support.waiting import wait_for
from harness.local.postgres import PostgresPair
from harness.util.proc import process_alive

pytestmark = pytest.mark.postgres

PASSWORD = "restore'pw%"


@pytest.fixture(scope="module")
def pair() -> Iterator[PostgresPair]:
    with pair_in_tmp("dg-rs-", PASSWORD) as pair:
        yield pair

def write(pair: PostgresPair, table: str, seqs: range) -> None:
    """Commit each row on its own through the DSN."""
    with psycopg.connect(pair.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (seq int PRIMARY KEY)")
        for seq in seqs:
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (seq,))


def restore_point(pair: PostgresPair, table: str, before: range, after: range) -> float:
    """Write `before`, take the moment, write `after` (recovery needs a commit past the target to know it got
    there) and archive it all, as the drill does; returns the moment."""
    write(pair, table, before)
    time.sleep(0.05)
    moment = time.time()
    time.sleep(0.05)
    write(pair, table, after)
    pair.switch_wal()
    return moment


def restored_rows(restored: dict, table: str) -> set[int]:
    with psycopg.connect(restored["dsn"], autocommit=True) as conn:
        return {seq for (seq,) in conn.execute(f"SELECT seq FROM {table}")}


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def processes_under(directory: Path) -> list[int]:
    """Live processes working anywhere under `directory` (a server's are all in its data dir)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (cwd == str(directory) or cwd.startswith(f"{directory}/")) and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def assert_gone(pair: PostgresPair, run_id: str, port: int, pid: int | None = None) -> None:
    directory = pair.restores_dir / run_id
    assert not directory.exists() and not processes_under(directory) and not listening(port)
    assert pid is None or not process_alive(pid)
    assert run_id not in {entry["name"] for entry in pair.restores()}


def test_start_takes_a_base_backup_like_the_snapshot_rds_has_after_creation(pair: PostgresPair) -> None:
    backup = pair.base_backup()
    assert backup is not None and set(backup) == {"taken_at", "timeline", "node"}
    assert backup["node"] == pair.roles()["primary"] and backup["taken_at"] <= time.time()
    assert (pair.backup_dir / "backup_label").exists() and pair.backup_dir.stat().st_mode & 0o777 == 0o700


def test_a_restore_holds_what_was_committed_before_its_point_and_nothing_after(pair: PostgresPair) -> None:
    moment = restore_point(pair, "between", range(0, 20), range(20, 40))
    restored = pair.restore(moment, "between", "DRILL-02", time.time() + 3600)
    assert restored["name"] == "between" and restored["dir"] == str(pair.restores_dir / "between")
    assert restored_rows(restored, "between") == set(range(20))
    assert process_alive(restored["pid"]) and listening(restored["port"])
    assert restored["port"] not in (pair.config.primary_port, pair.config.standby_port)
    with psycopg.connect(restored["dsn"], autocommit=True) as conn:  # promoted: a database of its own
        assert conn.execute("SELECT pg_is_in_recovery(), inet_server_port()").fetchone() == (False,
                                                                                            restored["port"])
    [listed] = pair.restores()
    assert listed | {"created_at": 0} == {
        "harness:drill": "DRILL-02", "harness:run-id": "between", "harness:expires": listed["harness:expires"],
        "port": restored["port"], "created_at": 0, "socket_dir": str(pair.restores_dir / "between" / "run"),
        "name": "between", "dir": restored["dir"], "running": True}
    assert pair.healthy()  # the pair goes on as it was

    assert pair.discard_restore("between") == {
        "ok": True, "detail": f"server {restored['pid']} stopped; {restored['dir']} removed"}
    assert_gone(pair, "between", restored["port"], restored["pid"])
    assert pair.discard_restore("between")["ok"]  # nothing left to discard: still fine


def test_a_restore_follows_a_failover_to_the_new_timeline(pair: PostgresPair) -> None:
    write(pair, "across", range(0, 10))
    backup = pair.take_base_backup()
    # The archive must hold every segment of the old timeline: a primary killed outright never archives the
    # one it was writing.
    pair.switch_wal()
    pair.fail_over()
    pair.rebuild_standby()
    assert pair.healthy()
    moment = restore_point(pair, "across", range(10, 20), range(20, 30))
    restored = pair.restore(moment, "across", "DRILL-02", time.time() + 3600)
    try:
        assert restored_rows(restored, "across") == set(range(20))
        with psycopg.connect(restored["dsn"], autocommit=True) as conn:
            # The failover's timeline followed, then one more of its own on promotion.
            timeline = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0]
        assert timeline == backup["timeline"] + 2
    finally:
        assert pair.discard_restore("across")["ok"]
    assert_gone(pair, "across", restored["port"], restored["pid"])


def test_a_point_before_the_base_backup_is_refused_at_once(pair: PostgresPair) -> None:
    taken_at = pair.base_backup()["taken_at"]
    with pytest.raises(RuntimeError, match=r"^restore point \S+ \S+ is before the oldest base backup") as error:
        pair.restore(taken_at - 60, "early", "DRILL-02", time.time() + 3600)
    assert "\n" not in str(error.value) and not (pair.restores_dir / "early").exists()


def test_a_point_the_archive_cannot_reach_fails_in_one_line_and_leaves_nothing(pair: PostgresPair) -> None:
    pair.take_base_backup()
    write(pair, "lost", range(0, 10))
    moment = time.time()
    write(pair, "lost", range(10, 20))
    pair.switch_wal()
    for archived in pair.archive_dir.iterdir():
        archived.unlink()
    port = free_port()
    try:
        with pytest.raises(RuntimeError) as error:
            pair.restore(moment, "lost", "DRILL-02", time.time() + 3600, port=port)
        message = str(error.value)
        assert "\n" not in message and message.startswith("restore lost to ")
        assert "recovery ended before configured recovery target was reached" in message
        assert_gone(pair, "lost", port)
    finally:
        pair.take_base_backup()  # the archive covers the base backup again, for whatever runs next
    assert pair.healthy()


def test_the_sweep_removes_expired_restores_only_even_a_killed_one(pair: PostgresPair) -> None:
    moment = restore_point(pair, "swept", range(0, 5), range(5, 10))
    now = time.time()
    expired = pair.restore(moment, "old", "DRILL-02", now - 1)
    # A name long enough that its socket would pass the kernel's limit inside the state dir: it gets a
    # socket dir under /tmp, which the discard removes as well.
    long_name = "drill-02-" + "x" * 55
    kept = pair.restore(moment, long_name, "DRILL-02", now + 3600)
    socket_dir = Path(next(r for r in pair.restores() if r["name"] == long_name)["socket_dir"])
    assert socket_dir.parent == Path("/tmp") and socket_dir.is_dir()
    os.kill(expired["pid"], signal.SIGKILL)  # the drill that made it was kill -9ed with it
    wait_for(lambda: {r["name"]: r["running"] for r in pair.restores()} == {"old": False, long_name: True}, 10,
             lambda: f"the killed restore seen as not running: {pair.restores()}", poll_s=0.05)

    report = pair.sweep_restores(now)
    assert [(r["name"], r["run_id"], r["drill"], r["removed"]) for r in report] == [
        (long_name, long_name, "DRILL-02", False), ("old", "old", "DRILL-02", True)]
    assert_gone(pair, "old", expired["port"], expired["pid"])
    assert restored_rows(kept, "swept") == set(range(5))  # the other one is untouched

    [entry] = pair.sweep_restores(float("inf"))  # what the stand-in's `down` does
    assert entry["name"] == long_name and entry["removed"], entry
    assert_gone(pair, long_name, kept["port"], kept["pid"])
    assert not socket_dir.exists() and pair.sweep_restores(float("inf")) == []
