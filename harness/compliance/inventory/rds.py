"""The database parts (RDS): the DB instances that carry the plan's tags and the export tasks of their
snapshots."""
from __future__ import annotations

from typing import Any

from harness.compliance.inventory.fetcher import Fetcher, batches
from harness.compliance.inventory.tagging import TAGGING


def fetch(f: Fetcher) -> None:
    def instances() -> list[dict[str, Any]]:
        tagged = f.by_tags("rds:db")
        if tagged is None:
            return [db for db in f.paginate("rds", "describe_db_instances", "DBInstances")
                    if f.tagged(db.get("TagList"))]
        return [db for arns in batches([m["ResourceARN"] for m in tagged], 100)
                for db in f.paginate("rds", "describe_db_instances", "DBInstances",
                                     Filters=[{"Name": "db-instance-id", "Values": arns}])]

    f.run("db_instances", (TAGGING,), instances)

    def exports() -> list[dict[str, Any]]:
        dbs = f.inv.parts["db_instances"]
        if not dbs:
            return []
        snapshot_arns = {s["DBSnapshotArn"] for db in dbs
                         for s in f.paginate("rds", "describe_db_snapshots", "DBSnapshots",
                                             DBInstanceIdentifier=db["DBInstanceIdentifier"])}
        return [t for t in f.paginate("rds", "describe_export_tasks", "ExportTasks")
                if t.get("SourceArn") in snapshot_arns]

    f.run("db_exports", ("db_instances",), exports)
