"""The order in which the environment is built, and the run that follows it."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.local.provision import backup, buckets, database, ecs, iam, load_balancer, monitoring, network
from harness.local.provision import registry, secrets, security_groups
from harness.local.provision.context import Blocked, ProvisionReport, Run, ServiceMissing, account
from harness.plan import Plan

# In dependency order; a step whose service is missing, or that needs what a skipped step would have
# built, is recorded in the report and the next one runs.
STEPS: tuple[tuple[str, Callable[[Run], None]], ...] = (
    ("account", account),
    ("network", network.network),
    ("log bucket", buckets.log_bucket),
    ("vpc flow logs", network.flow_logs),
    ("security groups", security_groups.security_groups),
    ("kms key", database.kms_key),
    ("database", database.database),
    ("database export", backup.database_export),
    ("secrets", secrets.app_secrets),
    ("container registry", registry.repository),
    ("app log group", ecs.app_log_group),
    ("task roles", iam.task_roles),
    ("load balancer", load_balancer.load_balancer),
    ("target group", load_balancer.target_group),
    ("certificate", load_balancer.certificate),
    ("listeners", load_balancer.listeners),
    ("web acl", load_balancer.web_acl),
    ("cluster", ecs.cluster),
    ("task definition", ecs.task_definition),
    ("service", ecs.service),
    ("autoscaling", ecs.autoscaling),
    ("alarm topic", monitoring.alarm_topic),
    ("load balancer alarms", monitoring.load_balancer_alarms),
    ("database alarms", monitoring.database_alarms),
    ("service alarms", monitoring.service_alarms),
    ("dashboard", monitoring.dashboard),
    ("cloudtrail", monitoring.trail),
)


def provision(client: Callable[[str], Any], plan: Plan, env: str) -> ProvisionReport:
    """Build (or find) the whole environment `env` of the plan at the endpoint behind `client`."""
    plan.environment(env)  # an unknown environment fails here, with the plan's own message
    run = Run(clients=client, plan=plan, env=env, report=ProvisionReport())
    for label, step in STEPS:
        try:
            step(run)
        except ServiceMissing as exc:
            run.report.skipped.setdefault(exc.service, exc.reason)
        except Blocked as exc:
            run.report.skipped[label] = f"needs the {exc}, which could not be built at this endpoint"
    return run.report
