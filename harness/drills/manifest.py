"""What the database holds, fetched for the restore drill: per application table its row count and a hash
of its rows in primary-key order, taken in one snapshot together with the database's own clock (the
restore point); and the canary rows a restored copy kept. Comparing is judges.manifest_diff's."""
from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from harness.smoke.probes import CANARY_TABLE

TABLES = sql.SQL(
    "SELECT c.relname, coalesce((SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
    "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
    "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "WHERE i.indrelid = c.oid AND i.indisprimary), '{{}}') "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> {canary} ORDER BY c.relname")


def take(dsn: str, connect_timeout_s: int = 10) -> tuple[dict[str, dict[str, Any]], float]:
    """({table: {"rows", "hash"}}, the database's clock as epoch seconds), all in one repeatable-read
    snapshot, so the manifest is the data as it stood at that instant."""
    with psycopg.connect(dsn, connect_timeout=connect_timeout_s) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            # The snapshot is taken by the transaction's first query: this one.
            at = float(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
            tables = conn.execute(TABLES.format(canary=sql.Literal(CANARY_TABLE))).fetchall()
            manifest = {}
            for name, keys in tables:
                order = sql.SQL(", ").join(sql.Identifier(k) for k in keys) if keys else sql.SQL("t::text")
                rows, digest = conn.execute(sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY {order}), '')) FROM {table} t"
                ).format(order=order, table=sql.Identifier(name))).fetchone()
                manifest[name] = {"rows": rows, "hash": digest}
    return manifest, at


def canary(dsn: str, run_id: str, restore_point: float, connect_timeout_s: int = 10) -> tuple[int, float | None, int]:
    """In a (restored) database: this run's canary rows up to the restore point, the newest of them (epoch
    seconds, None without any), and how many rows are from after the point (a restore that overshot)."""
    with psycopg.connect(dsn, connect_timeout=connect_timeout_s) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (CANARY_TABLE,)).fetchone()[0]
        if not exists:
            return 0, None, 0
        rows, newest, after = conn.execute(sql.SQL(
            "SELECT count(*) FILTER (WHERE client_at <= to_timestamp(%(point)s)), "
            "extract(epoch FROM max(client_at) FILTER (WHERE client_at <= to_timestamp(%(point)s))), "
            "count(*) FILTER (WHERE client_at > to_timestamp(%(point)s)) FROM {} WHERE run_id = %(run)s"
        ).format(sql.Identifier(CANARY_TABLE)), {"point": restore_point, "run": run_id}).fetchone()
    return rows, None if newest is None else float(newest), after
