"""§2 Database: the RDS PostgreSQL instance, its network placement, backups and logging."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from harness.compliance.facts import ingress_sources, not_observable, subnets_of_tier, the_one

DB_FIELDS = ("DBInstanceIdentifier", "Engine", "EngineVersion", "DBInstanceClass", "MultiAZ", "AvailabilityZone",
             "SecondaryAvailabilityZone", "AllocatedStorage", "MaxAllocatedStorage", "StorageType",
             "BackupRetentionPeriod", "StorageEncrypted", "KmsKeyId", "PubliclyAccessible",
             "PreferredMaintenanceWindow", "EnabledCloudwatchLogsExports", "MasterUserSecret", "VpcSecurityGroups",
             "DBSubnetGroup", "LatestRestorableTime")


def _db(db_instances, evidence):
    db = the_one(db_instances, "RDS instance")
    evidence("db instance", {k: db.get(k) for k in DB_FIELDS if k in db})
    return db


@pytest.mark.requirement("DB-01")
def test_engine_postgres_15_or_later(db_instances, expect, evidence):
    db = _db(db_instances, evidence)
    assert db["Engine"] == expect["engine"], f"engine is {db['Engine']}"
    major = int(str(db["EngineVersion"]).split(".")[0])
    assert major >= expect["min_major_version"], f"engine version {db['EngineVersion']} is older than {expect['min_major_version']}"


@pytest.mark.requirement("DB-02")
def test_multi_az(db_instances, evidence):
    db = _db(db_instances, evidence)
    assert db.get("MultiAZ") is True, "Multi-AZ is off"
    if not db.get("SecondaryAvailabilityZone"):
        not_observable("the RDS instance reports MultiAZ but no SecondaryAvailabilityZone")
    assert db["SecondaryAvailabilityZone"] != db.get("AvailabilityZone"), "the standby is in the primary's AZ"


@pytest.mark.requirement("DB-03")
def test_instance_class(db_instances, expect, evidence):
    db = _db(db_instances, evidence)
    assert db["DBInstanceClass"] == expect["instance_class"], \
        f"instance class is {db['DBInstanceClass']}, the plan says {expect['instance_class']}"


@pytest.mark.requirement("DB-04")
def test_storage_size_and_type(db_instances, expect, evidence):
    db = _db(db_instances, evidence)
    assert db["AllocatedStorage"] == expect["allocated_storage_gb"], f"{db['AllocatedStorage']} GB allocated"
    assert db.get("StorageType") == expect["storage_type"], f"storage type is {db.get('StorageType')}"


@pytest.mark.requirement("DB-05")
def test_storage_autoscaling(db_instances, evidence):
    db = _db(db_instances, evidence)
    ceiling = db.get("MaxAllocatedStorage")
    assert ceiling and ceiling > db["AllocatedStorage"], \
        f"storage auto-scaling is off (MaxAllocatedStorage {ceiling}, allocated {db['AllocatedStorage']})"


@pytest.mark.requirement("DB-06")
def test_backup_retention(db_instances, expect, evidence):
    db = _db(db_instances, evidence)
    assert db.get("BackupRetentionPeriod", 0) >= expect["min_retention_days"], \
        f"backups kept {db.get('BackupRetentionPeriod')} days, the plan wants {expect['min_retention_days']}"


@pytest.mark.requirement("DB-07")
def test_subnet_group_is_the_isolated_subnets(db_instances, subnets, route_tables, plan, expect, evidence):
    db = _db(db_instances, evidence)
    group = {s["SubnetIdentifier"] for s in db.get("DBSubnetGroup", {}).get("Subnets", [])}
    isolated = subnets_of_tier("isolated", subnets, route_tables, plan)
    assert group == {s["SubnetId"] for s in isolated}, \
        f"DB subnet group {sorted(group)} is not the isolated subnets {sorted(s['SubnetId'] for s in isolated)}"
    azs = {s["AvailabilityZone"] for s in isolated}
    assert len(azs) == expect["azs"], f"the DB subnet group spans {len(azs)} AZ(s)"


@pytest.mark.requirement("DB-08")
def test_db_security_group_admits_only_the_tasks(db_instances, services, security_groups, expect, evidence):
    db = _db(db_instances, evidence)
    task_groups = {g for s in services
                   for g in s.get("networkConfiguration", {}).get("awsvpcConfiguration", {}).get("securityGroups", [])}
    assert task_groups, "no ECS service security group was discovered to admit"
    db_group_ids = {g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups", [])}
    groups = [g for g in security_groups if g["GroupId"] in db_group_ids]
    assert groups, f"the DB security groups {sorted(db_group_ids)} were not found in the VPC"
    grants = [(g["GroupId"], lo, hi, src) for g in groups for lo, hi, src in ingress_sources(g)]
    evidence("db ingress", grants)
    port = expect["port"]
    bad = [g for g in grants if g[3] not in task_groups or (g[1], g[2]) != (port, port)]
    assert not bad, f"the DB admits more than port {port} from the tasks' group: {bad}"
    assert grants, f"the DB admits nothing on {port}: the tasks cannot reach it"


MANAGED_KEY = ("aws/rds", "alias/aws/rds")


def _key_id(key: str) -> str:
    """A KMS key ARN's key id (arn:aws:kms:REGION:ACCOUNT:key/ID); a bare key id as it is."""
    return key.rsplit(":key/", 1)[-1]


@pytest.mark.requirement("DB-09")
def test_encrypted_at_rest(db_instances, expect, evidence):
    """Encrypted storage meets "at rest with KMS" with AWS's managed key, whose id a target may not report;
    only a customer-managed key the plan names (`kms_key`, its ARN or id) must be the one reported."""
    db = _db(db_instances, evidence)
    assert db.get("StorageEncrypted") is True, "storage is not encrypted"
    named = expect.get("kms_key")
    if named is None or named in MANAGED_KEY:
        return
    if str(named).startswith("alias/"):
        pytest.fail(f"the plan names the KMS key by alias ({named}), which the instance does not report; "
                    "give kms_key as the key's ARN or id in the plan", pytrace=False)
    key = db.get("KmsKeyId")
    if not key:
        not_observable(f"the instance reports no KmsKeyId to compare with the plan's key {named}")
    assert _key_id(key) == _key_id(named), f"storage is encrypted with KMS key {key}, the plan names {named}"


@pytest.mark.requirement("DB-10")
def test_not_publicly_accessible(db_instances, evidence):
    db = _db(db_instances, evidence)
    assert db.get("PubliclyAccessible") is False, "the instance is publicly accessible"


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK = 7 * 24 * 60


def _minute_of_week(day_time: str) -> int:
    day, hh, mm = day_time.lower().split(":")
    return DAYS.index(day) * 1440 + int(hh) * 60 + int(mm)


def _expected_window_utc(expect, timezone: str, when: dt.datetime) -> tuple[int, int]:
    """The plan's local window (e.g. Sunday 02:00-04:00 in the plan's timezone) in UTC minutes of the week,
    taken in the week of the snapshot so daylight saving time is right."""
    tz = ZoneInfo(timezone)
    local = when.astimezone(tz)
    day = local.date() + dt.timedelta(days=(DAYS.index(expect["day"]) - local.weekday()) % 7)
    bounds = []
    for key in ("earliest", "latest"):
        hh, mm = map(int, expect[key].split(":"))
        utc = dt.datetime.combine(day, dt.time(hh, mm), tz).astimezone(dt.timezone.utc)
        bounds.append(utc.weekday() * 1440 + utc.hour * 60 + utc.minute)
    return bounds[0], bounds[1]


@pytest.mark.requirement("DB-11")
def test_maintenance_window(db_instances, inventory, plan, expect, evidence):
    db = _db(db_instances, evidence)
    window = db.get("PreferredMaintenanceWindow")
    assert window, "no maintenance window is set"
    earliest, latest = _expected_window_utc(expect, plan.plan.timezone, inventory.taken_at)
    start, end = (_minute_of_week(part) for part in window.split("-"))
    # Measure everything from the earliest allowed minute so a window crossing the week's end still compares.
    offset = lambda m: (m - earliest) % WEEK  # noqa: E731
    assert offset(start) < offset(end) <= offset(latest), \
        f"window {window} (UTC) is not within {expect['day']} {expect['earliest']}-{expect['latest']} {plan.plan.timezone}"


@pytest.mark.requirement("DB-12")
def test_postgresql_log_export(db_instances, expect, evidence):
    db = _db(db_instances, evidence)
    exported = db.get("EnabledCloudwatchLogsExports") or []
    missing = [log for log in expect["log_exports"] if log not in exported]
    assert not missing, f"log exports {exported} lack {missing}"


@pytest.mark.requirement("DB-13")
def test_master_credentials_in_secrets_manager(db_instances, secrets, plan, env_name, expect, evidence):
    db = _db(db_instances, evidence)
    managed = (db.get("MasterUserSecret") or {}).get("SecretArn")
    url_secret = plan.secret_prefix(env_name) + expect["secret"]
    evidence("master credentials", {"MasterUserSecret": managed, "database-url secret": url_secret})
    assert managed or any(s["Name"] == url_secret for s in secrets), \
        f"neither a managed master secret nor {url_secret} exists"
