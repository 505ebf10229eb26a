"""The database stand-in's failover for DRILL-01, against real PostgreSQL: the primary's AZ is lost (its server
killed outright), the standby is promoted and clients on the DSN follow it; the lost node is rebuilt as the
new synchronous standby, so a second failover swaps the roles back. A restart works whichever node is the
primary, even when the rebuild never ran. And the drill's negative self-test: with replication broken, the
primary acknowledges commits that a failover then loses.

Each test has a pair of its own (about 2 s to build). About 40 s in all.
"""
from __future__ import annotations

import shutil
from typing import Iterator

import psycopg
import pytest

from support.stand_in import pair_in_tmp
from harness.local.postgres import PostgresPair
from harness.util.proc import process_alive

pytestmark = pytest.mark.postgres

PASSWORD = "drill'pw"


@pytest.fixture
def pair() -> Iterator[PostgresPair]:
    with pair_in_tmp("pgfailover-", PASSWORD) as pair:
        with psycopg.connect(pair.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE canary (seq int PRIMARY KEY)")
        yield pair

def write(pair: PostgresPair, seqs: range) -> int:
    """Commit each row on its own through the DSN (acknowledged once the call returns); the server's port."""
    with psycopg.connect(pair.dsn(), autocommit=True) as conn:
        for seq in seqs:
            conn.execute("INSERT INTO canary VALUES (%s)", (seq,))
        return conn.execute("SELECT inet_server_port()").fetchone()[0]


def rows(pair: PostgresPair) -> set[int]:
    with psycopg.connect(pair.dsn(), autocommit=True) as conn:
        return {seq for (seq,) in conn.execute("SELECT seq FROM canary")}


def assert_healthy(pair: PostgresPair, primary: str) -> None:
    assert pair.roles() == {"primary": primary, "standby": "standby" if primary == "primary" else "primary"}
    assert pair.healthy()
    status = pair.status()
    assert status[primary]["role"] == "primary" and status[primary]["standby_sync_state"] == "sync"
    # Each data dir keeps its own port whatever its role.
    assert [status[node]["port"] for node in ("primary", "standby")] == [pair.config.primary_port,
                                                                         pair.config.standby_port]


def test_failover_keeps_every_acknowledged_commit_and_rebuild_swaps_the_roles_twice(pair: PostgresPair) -> None:
    assert_healthy(pair, "primary")
    assert pair.rebuild_standby() == {"standby": "standby", "method": None, "seconds": 0.0}  # healthy: no-op
    written = range(0)
    for old, new in (("primary", "standby"), ("standby", "primary")):
        client = psycopg.connect(pair.dsn(), autocommit=True)  # a client connected before the fault
        assert client.execute("SELECT inet_server_port()").fetchone()[0] == pair.status()[old]["port"]
        written = range(written.stop, written.stop + 50)
        write(pair, written)
        old_pid = pair.status()[old]["pid"]

        result = pair.fail_over()
        assert result["old_primary"] == old and result["new_primary"] == new
        assert result["killed_at"] <= result["promoted_at"] and result["promoted_at"] - result["killed_at"] < 15
        assert not process_alive(old_pid)
        assert pair.roles() == {"primary": new, "standby": None}
        assert not pair.healthy()
        with pytest.raises(psycopg.OperationalError):  # its server is gone...
            client.execute("SELECT 1")
        client.close()
        # ...and a new connection on the same DSN lands on the new primary, which commits without a standby.
        assert write(pair, range(1000 + written.start, 1000 + written.start + 5)) == pair.status()[new]["port"]
        assert set(range(written.stop)) <= rows(pair)

        rebuilt = pair.rebuild_standby()
        assert rebuilt["standby"] == old and rebuilt["method"] in ("pg_rewind", "base_backup")
        assert 0 < rebuilt["seconds"] < 30
        assert_healthy(pair, new)
        assert write(pair, range(2000 + written.start, 2000 + written.start + 5)) == pair.status()[new]["port"]
        assert pair.rebuild_standby()["method"] is None
    expected = set(range(written.stop)) | {base + start + i for base in (1000, 2000) for start in (0, 50)
                                           for i in range(5)}
    assert rows(pair) == expected


def test_after_roles_swapped_a_restart_gives_the_same_healthy_pair(pair: PostgresPair) -> None:
    write(pair, range(10))
    pair.fail_over()
    pair.rebuild_standby()
    pair.stop()
    assert not any(node["running"] for node in pair.status().values())
    pair.start()
    assert_healthy(pair, "standby")
    assert rows(pair) == set(range(10))
    pair.switch_wal()  # on the current primary


def test_a_failover_whose_rebuild_never_ran_is_rebuilt_on_start(pair: PostgresPair) -> None:
    write(pair, range(10))
    pair.fail_over()  # then the drill is killed: no rebuild, both data dirs are primaries
    write(pair, range(10, 20))
    pair.stop()
    pair.start()
    assert_healthy(pair, "standby")  # the promoted node, on the newer timeline, stays the primary
    assert rows(pair) == set(range(20))


def test_broken_replication_loses_acknowledged_commits_on_failover(pair: PostgresPair) -> None:
    write(pair, range(10))
    pair.break_replication()
    assert not pair.healthy()
    write(pair, range(10, 20))  # acknowledged by the primary alone
    pair.switch_wal()  # archived, yet the standby may not fetch it
    pair.fail_over()
    assert rows(pair) == set(range(10))  # every row committed after the break is lost
    rebuilt = pair.rebuild_standby()
    assert rebuilt["standby"] == "primary"
    assert_healthy(pair, "standby")
    assert rows(pair) == set(range(10))  # the rebuilt node dropped what it alone had
    write(pair, range(20, 25))
    assert rows(pair) == set(range(10)) | set(range(20, 25))


def test_broken_replication_is_repaired_by_rebuild_without_a_failover(pair: PostgresPair) -> None:
    pair.break_replication()
    write(pair, range(10))
    assert pair.rebuild_standby()["method"] == "reattach"
    assert_healthy(pair, "primary")
    pair.break_replication()
    pair.stop()
    pair.start()  # the overrides do not outlive a restart either
    assert_healthy(pair, "primary")
    assert rows(pair) == set(range(10))


def test_a_node_whose_disk_is_gone_is_rebuilt_from_a_base_backup(pair: PostgresPair) -> None:
    write(pair, range(10))
    pair.fail_over()
    shutil.rmtree(pair.data_dir("primary"))  # the lost AZ took the old primary's volume: nothing to rewind
    assert pair.roles() == {"primary": "standby", "standby": None}
    rebuilt = pair.rebuild_standby()
    assert rebuilt["standby"] == "primary" and rebuilt["method"] == "base_backup"
    assert_healthy(pair, "standby")
    write(pair, range(10, 15))
    assert rows(pair) == set(range(15))
