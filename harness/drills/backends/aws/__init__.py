"""The `aws` fault backend: a drill's fault made through the AWS APIs, on the deployment the plan's tags find.

These are the only writes the harness makes on AWS, each let through the target's read-only guard by
`Target.allowing` for that one call: RDS `RebootDBInstance` with `ForceFailover` (DRILL-01), ECS `StopTask`
(DRILL-03), RDS `RestoreDBInstanceToPointInTime` and `DeleteDBInstance` of the temporary instance it made
(DRILL-02, and the sweep of leftovers), ECS `UpdateService` to the previous task definition and back
(DRILL-04). Everything else here is a Describe/List call, recorded with the session's other calls.

One module per service: `discovery` finds the resources (one snapshot: tags, then links), `rds` the
failover, the restore and the removal of what it made, `ecs` the task loss and the deployments, `alarms`
the stop alarms; `backend` composes them into `AwsBackend`.

Errors: a problem found before the fault (discovery, an unsuitable resource, a describe call AWS refused)
raises `DrillRefused` with one line; a fault that could not be made raises `InjectFailed`, a RuntimeError,
since the probes are already running and the call may have reached AWS: the drill records an error and
rolls back as after any fault.
"""
from harness.drills.backends.aws.backend import AwsBackend
from harness.drills.backends.aws.ecs import image_version
from harness.drills.backends.aws.rds import restore_id

__all__ = ["AwsBackend", "image_version", "restore_id"]
