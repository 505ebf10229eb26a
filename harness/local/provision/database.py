"""The RDS PostgreSQL instance (DB-01..12) in the isolated subnets, and the KMS key that encrypts its
storage and its exports."""
from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from harness.local.provision.context import Run, absent_on

# Choices the plan leaves open, each a reasonable production default.
DB_MASTER_USER = "dougust"
DB_NAME = "dougust"
STORAGE_HEADROOM = 2  # MaxAllocatedStorage = allocated x this, so storage auto-scaling (DB-05) is on
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def kms_key(run: Run) -> None:
    kms = run.client("kms")
    alias = f"alias/{run.name('data')}"

    def find() -> dict[str, Any] | None:
        return absent_on(lambda: kms.describe_key(KeyId=alias)["KeyMetadata"], "NotFoundException")

    def create() -> dict[str, Any]:
        key = kms.create_key(Description=f"{run.name('data')}: database storage and exports",
                             Tags=run.tag_list("TagKey", "TagValue"))["KeyMetadata"]
        kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
        return key

    run.built["kms key"] = run.ensure("kms key", find, create, lambda k: k["KeyId"])["Arn"]


def _maintenance_window(run: Run) -> str:
    """RDS takes the window in UTC while the plan states it in its own timezone (DB-11): the first hour
    of the allowed span, converted with the zone's offset on the coming window day."""
    expect = run.expect("DB-11")
    zone = ZoneInfo(run.plan.plan.timezone)
    today = dt.datetime.now(zone).date()
    day = today + dt.timedelta(days=(WEEKDAYS.index(expect["day"]) - today.weekday()) % 7)
    start = dt.datetime.combine(day, dt.time.fromisoformat(expect["earliest"]), zone)
    latest = dt.datetime.combine(day, dt.time.fromisoformat(expect["latest"]), zone)
    end = min(start + dt.timedelta(hours=1), latest)
    start, end = start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)
    return f"{WEEKDAYS[start.weekday()]}:{start:%H:%M}-{WEEKDAYS[end.weekday()]}:{end:%H:%M}"


def _db_subnet_group(run: Run) -> str:
    rds = run.client("rds")
    name = run.name("db")
    subnet_ids = run.need("subnets")["isolated"]

    def find() -> dict[str, Any] | None:
        return absent_on(lambda: rds.describe_db_subnet_groups(DBSubnetGroupName=name)["DBSubnetGroups"][0],
                         "DBSubnetGroupNotFoundFault")

    def create() -> dict[str, Any]:
        return rds.create_db_subnet_group(DBSubnetGroupName=name, SubnetIds=subnet_ids, Tags=run.tag_list(),
                                          DBSubnetGroupDescription="Isolated subnets only")["DBSubnetGroup"]

    return run.ensure("rds db-subnet-group", find, create, lambda g: g["DBSubnetGroupName"])["DBSubnetGroupName"]


def database(run: Run) -> None:
    rds = run.client("rds")
    subnet_group = _db_subnet_group(run)
    identifier = run.name("db")
    storage = run.expect("DB-04")

    def find() -> dict[str, Any] | None:
        return absent_on(lambda: rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0],
                         "DBInstanceNotFound", "DBInstanceNotFoundFault")

    def create() -> dict[str, Any]:
        engine = run.expect("DB-01")
        return rds.create_db_instance(
            DBInstanceIdentifier=identifier, DBName=DB_NAME,
            Engine=engine["engine"], EngineVersion=str(engine["min_major_version"]),
            DBInstanceClass=run.expect("DB-03")["instance_class"], MultiAZ=True,
            AllocatedStorage=storage["allocated_storage_gb"], StorageType=storage["storage_type"],
            MaxAllocatedStorage=storage["allocated_storage_gb"] * STORAGE_HEADROOM,
            BackupRetentionPeriod=run.expect("DB-06")["min_retention_days"],
            StorageEncrypted=True, KmsKeyId=run.need("kms key"), PubliclyAccessible=False,
            DBSubnetGroupName=subnet_group, VpcSecurityGroupIds=[run.need("security groups")["db"]],
            Port=run.expect("DB-08")["port"], PreferredMaintenanceWindow=_maintenance_window(run),
            EnableCloudwatchLogsExports=run.expect("DB-12")["log_exports"],
            MasterUsername=DB_MASTER_USER, ManageMasterUserPassword=True,
            CopyTagsToSnapshot=True, Tags=run.tag_list(),
        )["DBInstance"]

    run.built["database"] = run.ensure("rds db-instance", find, create, lambda d: d["DBInstanceIdentifier"])
