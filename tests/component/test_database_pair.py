"""The local RDS Multi-AZ stand-in against real PostgreSQL: a synchronous standby that sees every commit,
WAL in the archive, an idempotent start, a failover the DSN follows, and a stop that leaves nothing behind.

The tests build on each other in file order (one pair per module; `make test` runs a module on one
worker). About 3 s in all.
"""
from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from support.stand_in import pair_in_tmp
from support.waiting import wait_for
from harness.local.postgres import RELOCATION_BASE, DatabaseConfig, PostgresPair
from harness.util.proc import process_alive

pytestmark = pytest.mark.postgres

PASSWORD = "p@ss:w/rd'%"  # URL- and SQL-special characters on purpose


@pytest.fixture(scope="module")
def pair() -> Iterator[PostgresPair]:
    with pair_in_tmp("pgpair-", PASSWORD) as pair:
        yield pair

def connect_to(pair: PostgresPair, port: int) -> psycopg.Connection:
    c = pair.config
    return psycopg.connect(host="127.0.0.1", port=port, user=c.user, password=c.password, dbname=c.database,
                           connect_timeout=5, autocommit=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to the `postgres` user")
def test_a_root_postgres_cannot_traverse_keeps_its_state_under_tmp(tmp_path: Path) -> None:
    assert tmp_path.parent.stat().st_mode & 0o777 == 0o700  # pytest's own tmp dirs: the case to move
    moved = PostgresPair(DatabaseConfig(root=tmp_path, password=PASSWORD))
    assert moved.relocated and moved.state.parent == RELOCATION_BASE
    assert {node["state_dir"] for node in moved.status().values()} == {str(moved.state)}


def test_a_traversable_root_keeps_its_state_inside(pair: PostgresPair) -> None:
    assert not pair.relocated and pair.state == pair.config.root / "postgres"


def test_start_gives_a_primary_with_a_synchronous_standby(pair: PostgresPair) -> None:
    status = pair.status()
    assert status["primary"] | {"pid": None} == {
        "running": True, "pid": None, "port": pair.config.primary_port, "role": "primary",
        "log": str(pair.log_file("primary")), "state_dir": str(pair.state), "standby_sync_state": "sync"}
    assert status["standby"]["running"] and status["standby"]["role"] == "standby"
    assert status["standby"]["port"] == pair.config.standby_port


def test_a_commit_on_the_primary_is_read_on_the_standby(pair: PostgresPair) -> None:
    with psycopg.connect(pair.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone() == (pair.config.primary_port,)
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text)")
        conn.execute("INSERT INTO orders VALUES (1, 'before failover')")
    with connect_to(pair, pair.config.standby_port) as standby:
        assert standby.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        # synchronous_commit=on waits for the standby's flush, not its replay: allow a moment to apply.
        def row_on_standby() -> object:
            try:
                return standby.execute("SELECT item FROM orders WHERE id = 1").fetchall()
            except psycopg.errors.UndefinedTable:
                return None
        wait_for(row_on_standby, 10.0, lambda: "the row on the standby", poll_s=0.05)
        assert row_on_standby() == [("before failover",)]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            standby.execute("INSERT INTO orders VALUES (2, 'on a standby')")


def test_switch_wal_returns_the_archived_segment_holding_the_last_commit(pair: PostgresPair) -> None:
    with psycopg.connect(pair.dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO orders VALUES (10, 'to archive')")
        segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
    archived = pair.switch_wal()
    assert archived == pair.archive_dir / segment
    assert archived.stat().st_size == 16 * 1024 * 1024


def test_start_again_changes_nothing(pair: PostgresPair) -> None:
    before = pair.status()
    pair.start()
    assert pair.status() == before  # the same servers (PIDs), roles and sync state: nothing restarted


def test_after_promotion_the_dsn_reaches_the_new_primary(pair: PostgresPair) -> None:
    pair.promote_standby()
    assert pair.status()["standby"]["role"] == "primary"
    old_primary = pair.status()["primary"]["pid"]
    os.kill(old_primary, signal.SIGINT)  # fast shutdown: the drill fences the old primary
    wait_for(lambda: not pair.status()["primary"]["running"], 10.0, lambda: "the old primary to stop", poll_s=0.05)
    with psycopg.connect(pair.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone() == (pair.config.standby_port,)
        conn.execute("INSERT INTO orders VALUES (2, 'after failover')")  # would hang if it still wanted a sync standby
        assert conn.execute("SELECT id FROM orders ORDER BY id").fetchall() == [(1,), (2,), (10,)]


def test_start_after_a_promotion_keeps_one_primary_and_rebuilds_the_other(pair: PostgresPair) -> None:
    """The promoted node stays primary (it has the newer timeline); the old primary comes back as its
    synchronous standby, never as a second primary."""
    pair.start()
    assert pair.roles() == {"primary": "standby", "standby": "primary"} and pair.healthy()
    with psycopg.connect(pair.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT id FROM orders ORDER BY id").fetchall() == [(1,), (2,), (10,)]


def test_stop_leaves_no_process_and_no_listener(pair: PostgresPair) -> None:
    postmasters = [node["pid"] for node in pair.status().values() if node["running"]]
    processes = set(postmasters) | {pid for parent in postmasters for pid in children(parent)}
    assert len(processes) > len(postmasters)  # the test sees the server's children too
    pair.stop()
    assert [pid for pid in processes if process_alive(pid)] == []
    assert not any(str(pair.state) in cmdline for cmdline in all_cmdlines())
    for port in (pair.config.primary_port, pair.config.standby_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert list((pair.state / "run").glob(".s.PGSQL.*")) == []
    assert all(not node["running"] for node in pair.status().values())


def children(parent: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.add(int(stat.parent.name))
    return found


def all_cmdlines() -> list[str]:
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(path.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return lines
