"""The database's part of the drills: a forced Multi-AZ failover (DRILL-01), and a point-in-time restore into
a temporary instance that is deleted afterwards, or by the sweep once it has expired (DRILL-02).

A restored instance carries the drill's tags (TAG_DRILL, TAG_RUN, TAG_ENV, TAG_EXPIRES) and never the plan's,
so discovery never takes it for part of the deployment; nothing here deletes an instance without TAG_DRILL,
whatever its name, and the sweep deletes only its own environment's (TAG_ENV) unless asked for every one."""
from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from typing import Any

import botocore.exceptions

from harness.drills import judges
from harness.drills.backends import Journal
from harness.drills.backends.aws.common import AWS_ERRORS, Poller, epoch, say
from harness.drills.backends.aws.discovery import Discovery
from harness.drills.model import (TAG_DRILL, TAG_ENV, TAG_EXPIRES, TAG_RUN, DrillRefused, DrillSpec, InjectFailed,
                                  PreflightFailed, Restored, Unreadable)
from harness.target import Target

NOT_FOUND = ("DBInstanceNotFound", "DBInstanceNotFoundFault")
# Statuses a restoring instance does not leave by itself: waiting on would only run out the timeout.
RESTORE_FAILED = ("failed", "incompatible-restore", "incompatible-parameters", "incompatible-network",
                  "storage-full", "inaccessible-encryption-credentials")


def restore_id(source: str, run_id: str) -> str:
    """The temporary instance's identifier: the source's name cut short, and the run id's random tail, as
    RDS allows it (letters, digits and single hyphens, a letter first, at most 63 characters)."""
    ident = re.sub(r"[^a-z0-9]+", "-", f"{source[:30]}-drill-{run_id[-6:]}".lower()).strip("-")
    ident = ident if ident[:1].isalpha() else f"d-{ident}"
    return ident[:63].rstrip("-")


def db_now(target: Target, identifier: str) -> dict[str, Any]:
    """The instance as RDS describes it now."""
    return target.client("rds").describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]


def instance_events(target: Target, identifier: str, since_epoch: float) -> list[tuple[Any, str]]:
    """RDS's events of the instance since then, (when, message), as RDS keeps them (also for a deleted one)."""
    pages = target.client("rds").get_paginator("describe_events").paginate(
        SourceType="db-instance", SourceIdentifier=identifier,
        StartTime=dt.datetime.fromtimestamp(since_epoch, dt.timezone.utc))
    return [(e["Date"], e["Message"]) for page in pages for e in page.get("Events", [])]


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _code(exc: BaseException) -> str | None:
    return exc.response.get("Error", {}).get("Code") if isinstance(exc, botocore.exceptions.ClientError) else None


def _tag_map(tags: Sequence[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


class Failover:
    """A reboot of the environment's database with ForceFailover: its standby becomes the primary."""

    def __init__(self, target: Target, found: Discovery) -> None:
        self._target = target
        self._found = found

    def steps(self, drill: DrillSpec) -> list[str]:
        """What a failover would do (--dry-run)."""
        db = db_now(self._target, self._found.database()["DBInstanceIdentifier"])
        ident, az, standby = db["DBInstanceIdentifier"], db.get("AvailabilityZone"), db.get(
            "SecondaryAvailabilityZone")
        where = f"primary in {az}" + (f", standby in {standby}" if standby else "")
        shape = (f"Multi-AZ, {where}" if db.get("MultiAZ")
                 else f"not Multi-AZ, {where}: preflight will fail the drill, injecting nothing")
        return [f"reboot RDS instance {ident} with ForceFailover=True ({shape}); follow its RDS events "
                f"until a failover completes",
                f"rollback: nothing to undo (the standby stays primary); wait up to {drill.timeout_s:.0f} s "
                f"for {ident} to be available"]

    def preflight(self, journal: Journal) -> None:
        """PreflightFailed when the standby is not in sync (judges.rds_standby)."""
        ident = self._found.database()["DBInstanceIdentifier"]
        db = db_now(self._target, ident)
        found = {"db_instance": ident, "status": db.get("DBInstanceStatus"), "multi_az": db.get("MultiAZ"),
                 "az": db.get("AvailabilityZone"), "standby_az": db.get("SecondaryAvailabilityZone"),
                 "engine": db.get("Engine")}
        found["pending_modifications"] = sorted(db.get("PendingModifiedValues") or {})
        journal("discovered", found)
        problem = judges.rds_standby(ident, db.get("MultiAZ"), db.get("DBInstanceStatus"),
                                     db.get("PendingModifiedValues"))
        if problem:
            raise PreflightFailed(judges.out_of_sync(problem))

    def inject(self, journal: Journal) -> dict[str, Any]:
        """The forced failover; returns the instance and where its primary and standby were before."""
        ident = self._found.database()["DBInstanceIdentifier"]
        rds = self._target.client("rds")
        try:
            before = db_now(self._target, ident)
            with self._target.allowing("RebootDBInstance"):
                after = rds.reboot_db_instance(DBInstanceIdentifier=ident, ForceFailover=True)["DBInstance"]
        except AWS_ERRORS as exc:
            raise InjectFailed(f"forced failover of {ident}: {say(exc)}") from None
        hit = {"db_instance": ident, "az_before": before.get("AvailabilityZone"),
               "standby_az_before": before.get("SecondaryAvailabilityZone")}
        journal("reboot with failover", {**hit, "status": after.get("DBInstanceStatus")})
        return hit

    def available(self, was: str | None) -> tuple[bool, str]:
        """(the database is available, one line naming its zone now and whether it moved from `was`)."""
        try:
            ident = self._found.database()["DBInstanceIdentifier"]
            db = db_now(self._target, ident)
        except DrillRefused as exc:
            return False, str(exc)
        except AWS_ERRORS as exc:
            return False, say(exc)
        status, az = db.get("DBInstanceStatus"), db.get("AvailabilityZone")
        moved = f" (was {was})" if was and was != az else (" (same zone as before)" if was else "")
        return status == "available", f"{ident} {status} in {az}{moved}"


class Restore:
    """The environment's database restored to a point in time into a temporary instance, and the removal of
    such instances. `dsn_template`: how the runner reaches a restored database,
    'postgresql://USER:PASS@{host}:{port}/dougust' (None: it cannot, and a restore is not verified).
    `delete_timeout_s`: how long a discard or a sweep waits for a deleted instance to be gone."""

    def __init__(self, target: Target, found: Discovery, poller: Poller, env: str, dsn_template: str | None,
                 delete_timeout_s: float) -> None:
        self._target = target
        self._found = found
        self._poller = poller
        self._env = env
        self._dsn_template = dsn_template
        self._delete_timeout_s = delete_timeout_s
        self.made: str | None = None  # the instance this backend's restore call created

    def steps(self, drill: DrillSpec) -> list[str]:
        """What a restore would do (--dry-run)."""
        db = db_now(self._target, self._found.database()["DBInstanceIdentifier"])
        ident = db["DBInstanceIdentifier"]
        subnet_group = (db.get("DBSubnetGroup") or {}).get("DBSubnetGroupName", "(none)")
        groups = ", ".join(g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups", [])) or "none"
        backups = db.get("BackupRetentionPeriod") or 0
        latest = db.get("LatestRestorableTime")
        where = (f"{backups} days of backups, restorable up to {_iso(epoch(latest))}" if backups and latest
                 else f"backup retention {backups} days, latest restorable time {latest or 'none'}: "
                      f"preflight will refuse")
        verify = ("verify it against the manifest through the restore DSN template" if self._dsn_template
                  else "it cannot be verified from here (no restore DSN template): the drill reports it restored, "
                       "not verified")
        discard_s = self._delete_timeout_s
        return [f"restore RDS instance {ident} ({where}) to the manifest's restore point, waiting up to "
                f"{drill.timeout_s:.0f} s for RDS to archive past it, into a temporary instance "
                f"{ident[:30]}-drill-<run> ({db.get('DBInstanceClass')}, single-AZ, not publicly accessible, "
                f"no deletion protection) in subnet group {subnet_group} with security groups {groups}; tagged "
                f"{TAG_DRILL}={drill.id}, {TAG_RUN}=<run id>, {TAG_ENV}={self._env}, {TAG_EXPIRES}=<start + "
                f"{judges.restore_expiry(0.0, drill.timeout_s, discard_s):.0f} s: the drill's hard timeout for the "
                f"restore, as long again to verify, {discard_s:.0f} s to delete>, never "
                f"{self._found.tags()}, so discovery does not see it",
                f"wait until it is available, then {verify}",
                "rollback: delete the temporary instance (no final snapshot, its automated backups too) and wait "
                "until it is gone; if the run is killed, 'harness drills sweep' removes it once expired"]

    def preflight(self, journal: Journal) -> None:
        """Refuse a database that keeps no automated backups or has nothing restorable yet."""
        ident = self._found.database()["DBInstanceIdentifier"]
        db = db_now(self._target, ident)
        latest = db.get("LatestRestorableTime")
        backups = db.get("BackupRetentionPeriod") or 0
        journal("discovered", {"db_instance": ident, "status": db.get("DBInstanceStatus"),
                               "backup_retention_days": backups,
                               "latest_restorable_time": _iso(epoch(latest)) if latest else None,
                               "subnet_group": (db.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
                               "instance_class": db.get("DBInstanceClass")})
        if backups < 1:
            raise DrillRefused(f"database {ident} keeps no automated backups (retention 0 days): a point-in-time "
                               f"restore needs them; refusing")
        if not latest:
            raise DrillRefused(f"database {ident} reports no latest restorable time: RDS has nothing to restore "
                               f"from yet; refusing")

    def restore(self, drill: DrillSpec, journal: Journal, restore_point: float, run_id: str,
                expires: float) -> Restored:
        """RDS restores to a point only once it has archived the transaction log past it (every five
        minutes), so the restore waits for the source's LatestRestorableTime to reach the point first. The
        restored instance is made cheap and harmless (single-AZ, private, no deletion protection) in the
        source's network, and tagged as the drill's, never as the deployment's; the whole restore is bounded
        by the drill's timeout."""
        started = time.monotonic()
        rds = self._target.client("rds")
        point = _iso(restore_point)
        try:
            source = db_now(self._target, self._found.database()["DBInstanceIdentifier"])
        except DrillRefused as exc:
            raise InjectFailed(str(exc)) from None
        except AWS_ERRORS as exc:
            raise InjectFailed(f"reading the database to restore: {say(exc)}") from None
        ident = source["DBInstanceIdentifier"]
        target = restore_id(ident, run_id)

        def archived() -> tuple[bool, str]:
            latest = db_now(self._target, ident).get("LatestRestorableTime")
            if not latest:
                return False, f"{ident} reports no latest restorable time"
            return epoch(latest) >= restore_point, f"{ident} restorable up to {_iso(epoch(latest))}, restore point {point}"

        try:
            ok, line, waited = self._poller.wait(archived, drill.timeout_s, journal, "restore point")
        except AWS_ERRORS as exc:
            raise InjectFailed(f"reading the latest restorable time of {ident}: {say(exc)}") from None
        if not ok:
            raise InjectFailed(f"restore point {point} not restorable after {waited:.0f} s ({line})")
        subnet_group = (source.get("DBSubnetGroup") or {}).get("DBSubnetGroupName")
        tags = {TAG_DRILL: drill.id, TAG_RUN: run_id, TAG_ENV: self._env, TAG_EXPIRES: _iso(expires)}
        request: dict[str, Any] = {
            "SourceDBInstanceIdentifier": ident, "TargetDBInstanceIdentifier": target,
            "RestoreTime": dt.datetime.fromtimestamp(restore_point, dt.timezone.utc),
            "DBInstanceClass": source["DBInstanceClass"],
            "VpcSecurityGroupIds": [g["VpcSecurityGroupId"] for g in source.get("VpcSecurityGroups", [])],
            "MultiAZ": False, "PubliclyAccessible": False, "DeletionProtection": False, "CopyTagsToSnapshot": False,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        if subnet_group:
            request["DBSubnetGroupName"] = subnet_group
        try:
            with self._target.allowing("RestoreDBInstanceToPointInTime"):
                made = rds.restore_db_instance_to_point_in_time(**request)["DBInstance"]
        except AWS_ERRORS as exc:
            raise InjectFailed(f"restoring {ident} to {point}: {say(exc)}") from None
        except KeyboardInterrupt:
            self.made = target  # interrupted in flight: the instance may exist, and the undo must find it
            raise
        self.made = target
        journal("restore started", {"source": ident, "db_instance": target, "restore_time": point,
                                    "subnet_group": subnet_group, "instance_class": source["DBInstanceClass"],
                                    "tags": tags, "status": made.get("DBInstanceStatus")})

        def available() -> tuple[bool, str]:
            try:
                status = db_now(self._target, target).get("DBInstanceStatus")
            except AWS_ERRORS as exc:  # a new instance may not be listed yet: look again
                return False, say(exc)
            if status in RESTORE_FAILED:
                raise InjectFailed(f"the restore of {ident} into {target} ended {status}")
            return status == "available", f"{target} {status}"

        ok, line, _ = self._poller.wait(available, max(0.0, drill.timeout_s - (time.monotonic() - started)),
                                        journal, "restoring")
        if not ok:
            raise InjectFailed(f"{target} not available {time.monotonic() - started:.0f} s after the restore "
                               f"began ({line})")
        try:
            db = db_now(self._target, target)
        except AWS_ERRORS as exc:
            raise InjectFailed(f"reading the restored {target}: {say(exc)}") from None
        host, port = db.get("Endpoint", {}).get("Address"), db.get("Endpoint", {}).get("Port")
        dsn = self._dsn_template.format(host=host, port=port) if self._dsn_template else None
        detail = {"endpoint": host, "port": port, "source": ident, "restore_time": point,
                  "multi_az": db.get("MultiAZ"), "expires": tags[TAG_EXPIRES]}
        journal("restored", {"db_instance": target, **detail})
        return Restored(target, dsn, restore_point, detail)

    def discard(self, restored: Restored, journal: Journal) -> dict[str, Any]:
        """Delete the restored instance and wait until RDS no longer lists it. When the drill never got a
        `Restored` back (its wait timed out after the restore call), `restored.name` is only the run's id:
        the instance this backend asked for is removed instead. Only an instance tagged TAG_DRILL is ever
        deleted."""
        try:
            db = self._find(restored.name)
            if db is None and self.made and self.made != restored.name:
                db = self._find(self.made)
        except AWS_ERRORS as exc:
            result = {"ok": False, "detail": f"cannot read {restored.name}: {say(exc)}"}
            journal("discard failed", result)
            return result
        if db is None:
            result = {"ok": True, "detail": f"nothing to remove: no database instance {self.made or restored.name}"}
            journal("discarded", result)
            return result
        ident = db["DBInstanceIdentifier"]
        try:
            tags = self._tags(db)
        except AWS_ERRORS as exc:
            result = {"ok": False, "detail": f"cannot read the tags of {ident}: {say(exc)}; not deleted"}
            journal("discard failed", result)
            return result
        if TAG_DRILL not in tags:
            result = {"ok": False, "detail": f"refused to delete {ident}: it has no {TAG_DRILL} tag, so no drill "
                                             f"made it"}
            journal("discard refused", result)
            return result
        removed = self._remove([db], journal)[ident]
        result = {"ok": removed[0], "detail": removed[1]}
        journal("discarded", {"db_instance": ident, **result})
        return result

    def sweep(self, now: float, journal: Journal, env: str | None) -> list[dict[str, Any]]:
        """Every instance tagged TAG_DRILL in the region; those judges.sweep finds expired for `env` (None:
        every environment) deleted, all at once, then waited for. An instance without TAG_DRILL is never
        touched, whatever its name; one of another environment, or whose expiry cannot be read, is kept and
        reported."""
        found: list[tuple[dict[str, Any], dict[str, str], bool, str]] = []
        try:
            for page in self._target.client("rds").get_paginator("describe_db_instances").paginate():
                for db in page.get("DBInstances", []):
                    tags = self._tags(db)
                    if TAG_DRILL in tags:
                        found.append((db, tags, *judges.sweep(tags, now, env)))
        except AWS_ERRORS as exc:
            raise Unreadable(f"cannot list the database instances in {self._target.region}: {say(exc)}") from None
        expired = [db for db, _, remove, _ in found if remove]
        removed = self._remove(expired, journal) if expired else {}
        items = []
        for db, tags, remove, why in found:
            ident = db["DBInstanceIdentifier"]
            gone, detail = removed.get(ident, (False, why))
            item = {"name": ident, "run_id": tags.get(TAG_RUN, ""), "drill": tags[TAG_DRILL],
                    "expires": tags.get(TAG_EXPIRES), "expired": remove, "removed": gone,
                    "detail": f"{why}: {detail}" if remove else detail}
            journal("swept" if gone else "kept", item)
            items.append(item)
        return items

    def _remove(self, instances: Sequence[dict[str, Any]], journal: Journal) -> dict[str, tuple[bool, str]]:
        """Delete these (drill-tagged) instances, then wait, up to delete_timeout_s for them all, until RDS
        no longer lists them: {identifier: (gone, one line)}."""
        rds = self._target.client("rds")
        refused: dict[str, str] = {}
        for db in instances:
            ident = db["DBInstanceIdentifier"]
            if db.get("DBInstanceStatus") == "deleting":
                continue  # an earlier discard or sweep asked already
            try:
                with self._target.allowing("DeleteDBInstance"):
                    rds.delete_db_instance(DBInstanceIdentifier=ident, SkipFinalSnapshot=True,
                                           DeleteAutomatedBackups=True)
                journal("delete", {"db_instance": ident})
            except AWS_ERRORS as exc:
                if _code(exc) not in NOT_FOUND:
                    refused[ident] = say(exc)
        waiting = [db["DBInstanceIdentifier"] for db in instances if db["DBInstanceIdentifier"] not in refused]
        left: dict[str, str] = {}

        def gone() -> tuple[bool, str]:
            left.clear()
            for ident in waiting:
                try:
                    db = self._find(ident)
                except AWS_ERRORS as exc:
                    left[ident] = say(exc)
                    continue
                if db is not None:
                    left[ident] = str(db.get("DBInstanceStatus"))
            return not left, ", ".join(f"{i} {state}" for i, state in left.items()) or "gone"

        _, _, waited = self._poller.wait(gone, self._delete_timeout_s, journal if waiting else None, "deleting")
        result = {ident: (False, line) for ident, line in refused.items()}
        for ident in waiting:
            result[ident] = ((False, f"{ident} still {left[ident]} after {waited:.0f} s") if ident in left
                             else (True, f"{ident} deleted"))
        return result

    def _find(self, identifier: str) -> dict[str, Any] | None:
        """The instance now, or None when there is none by that name (an identifier RDS would not accept
        names none either)."""
        try:
            return db_now(self._target, identifier)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in NOT_FOUND + ("InvalidParameterValue",):
                return None
            raise

    def _tags(self, db: dict[str, Any]) -> dict[str, str]:
        """An instance's tags: DescribeDBInstances carries them; an endpoint that leaves them out is asked."""
        if "TagList" in db:
            return _tag_map(db["TagList"])
        return _tag_map(self._target.client("rds").list_tags_for_resource(ResourceName=db["DBInstanceArn"])
                        .get("TagList"))
