"""DR-02 (optional): the plan's weekly full backup, a database snapshot exported to its own bucket."""
from __future__ import annotations

from typing import Any

from harness.local.provision import buckets, iam
from harness.local.provision.context import Run, absent_on


def database_export(run: Run) -> None:
    """Only seeded once here; keeping it weekly is a scheduler's job, which the emulator has not got."""
    rds = run.client("rds")
    database = run.need("database")
    bucket = buckets.bucket(run, f"{run.name('backups')}-{run.account}", None)
    role = iam.role(run, "rds-export", "export.rds.amazonaws.com", iam.policy_document(
        {"Effect": "Allow", "Action": ["s3:PutObject*", "s3:GetObject*", "s3:DeleteObject*"],
         "Resource": f"arn:aws:s3:::{bucket}/*"},
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": f"arn:aws:s3:::{bucket}"},
    ))
    snapshot_id = run.name("db-export-source")

    def find_snapshot() -> dict[str, Any] | None:
        return absent_on(lambda: rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)["DBSnapshots"][0],
                         "DBSnapshotNotFound", "DBSnapshotNotFoundFault")

    def create_snapshot() -> dict[str, Any]:
        return rds.create_db_snapshot(DBSnapshotIdentifier=snapshot_id, Tags=run.tag_list(),
                                      DBInstanceIdentifier=database["DBInstanceIdentifier"])["DBSnapshot"]

    snapshot = run.ensure("rds db-snapshot", find_snapshot, create_snapshot, lambda s: s["DBSnapshotIdentifier"])
    task_id = run.name("db-export")

    def find_export() -> dict[str, Any] | None:
        return absent_on(lambda: rds.describe_export_tasks(ExportTaskIdentifier=task_id)["ExportTasks"][0],
                         "ExportTaskNotFound", "ExportTaskNotFoundFault")

    def create_export() -> dict[str, Any]:
        return rds.start_export_task(ExportTaskIdentifier=task_id, SourceArn=snapshot["DBSnapshotArn"],
                                     S3BucketName=bucket, S3Prefix="rds-exports", IamRoleArn=role,
                                     KmsKeyId=run.need("kms key"))

    run.ensure("rds export-task", find_export, create_export, lambda t: t["ExportTaskIdentifier"])
