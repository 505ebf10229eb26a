"""The ECS Fargate side (ECS-01..12): the cluster, the app's log group, the task definition with a deploy
history, the service behind the target group, and its target-tracking autoscaling."""
from __future__ import annotations

from typing import Any

from harness.local.provision.context import Run, first

# Choices the plan leaves open, each a reasonable production default.
LOG_RETENTION_DAYS = 30
APP_USER = "1000"  # the `node` user of the official Node.js images
CONTAINER = "backend"
PREVIOUS_IMAGE_TAG = "2026.11.1"  # the release before the current one: the deploy history's first revision
CURRENT_IMAGE_TAG = "latest"  # what the service runs; the smoke gate's default expected version
APP_SETTINGS = {"JWT_ACCESS_TOKEN_TTL": "15m", "JWT_REFRESH_TOKEN_TTL": "30d"}


def app_log_group(run: Run) -> None:
    logs = run.client("logs")
    name = run.name("app")

    def find() -> dict[str, Any] | None:
        groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        return next((g for g in groups if g["logGroupName"] == name), None)

    def create() -> dict[str, Any]:
        logs.create_log_group(logGroupName=name, tags=run.plan.tags(run.env))
        logs.put_retention_policy(logGroupName=name, retentionInDays=LOG_RETENTION_DAYS)
        return {"logGroupName": name}

    run.built["app log group"] = run.ensure("logs log-group", find, create, lambda g: g["logGroupName"])["logGroupName"]


def cluster(run: Run) -> None:
    ecs = run.client("ecs")
    name = run.name("cluster")

    def find() -> dict[str, Any] | None:
        clusters = ecs.describe_clusters(clusters=[name])["clusters"]
        return next((c for c in clusters if c["status"] == "ACTIVE"), None)

    def create() -> dict[str, Any]:
        return ecs.create_cluster(clusterName=name, settings=[{"name": "containerInsights", "value": "enabled"}],
                                  tags=run.tag_list("key", "value"))["cluster"]

    run.built["cluster"] = run.ensure("ecs cluster", find, create, lambda c: c["clusterName"])["clusterName"]


def _container(run: Run, tag: str = CURRENT_IMAGE_TAG) -> dict[str, Any]:
    """Plain settings in `environment`, credentials only as Secrets Manager references (ECS-04/05)."""
    port = run.expect("ECS-03")["container_port"]
    app = run.expect("ECS-04")
    environment = {**app["values"], **APP_SETTINGS, "TENANT_ID": run.plan.project,
                   "NEXT_PUBLIC_API_URL": f"https://{run.need('load balancer')['DNSName']}"}
    secret_arns = run.need("secrets")
    return {
        "name": CONTAINER, "image": f"{run.need('repository')}:{tag}", "essential": True, "user": APP_USER,
        "portMappings": [{"containerPort": port, "protocol": "tcp"}],
        "environment": [{"name": k, "value": v} for k, v in environment.items()],
        "secrets": [{"name": var, "valueFrom": secret_arns[short]}
                    for var, short in run.expect("ECS-05")["secrets"].items()],
        "logConfiguration": {"logDriver": run.expect("ECS-06")["log_driver"], "options": {
            "awslogs-group": run.need("app log group"), "awslogs-region": run.region,
            "awslogs-stream-prefix": CONTAINER}},
    }


def task_definition(run: Run) -> None:
    """The service's family with a deploy history, as a service that has been deployed before has one:
    a previous revision (the image tagged PREVIOUS_IMAGE_TAG, nothing else different), then the current
    one (CURRENT_IMAGE_TAG), which the service runs. A rollback (DRILL-04) has somewhere to go.

    A family that already has revisions gets none added: the previous one is the revision with the
    previous tag (or the oldest, for a family registered before the history was kept) and the current
    one the newest other revision, as `describe_task_definition(family)` answers."""
    ecs = run.client("ecs")
    family = run.name("backend")
    expect = run.expect("ECS-02")
    roles = run.need("task roles")

    def revisions() -> list[dict[str, Any]]:
        """The family's ACTIVE revisions, oldest first (moto takes familyPrefix as the exact family,
        AWS as a prefix: the family is matched here)."""
        arns = [arn for page in ecs.get_paginator("list_task_definitions").paginate(familyPrefix=family,
                                                                                      status="ACTIVE")
                for arn in page["taskDefinitionArns"] if arn.rsplit("/", 1)[-1].rsplit(":", 1)[0] == family]
        arns.sort(key=lambda arn: int(arn.rsplit(":", 1)[1]))
        return [ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"] for arn in arns]

    def tag(td: dict[str, Any]) -> str:
        return td["containerDefinitions"][0]["image"].rsplit(":", 1)[-1]

    def find_previous() -> dict[str, Any] | None:
        history = revisions()
        return next((td for td in history if tag(td) == PREVIOUS_IMAGE_TAG), history[0] if history else None)

    def find_current() -> dict[str, Any] | None:
        history = [td for td in revisions() if td["taskDefinitionArn"] != previous["taskDefinitionArn"]]
        return history[-1] if history and history[-1]["revision"] > previous["revision"] else None

    def register(tag: str) -> dict[str, Any]:
        return ecs.register_task_definition(
            family=family, requiresCompatibilities=[expect["compatibility"]], networkMode=expect["network_mode"],
            cpu=str(expect["cpu"]), memory=str(expect["memory"]), taskRoleArn=roles["task"],
            executionRoleArn=roles["execution"], containerDefinitions=[_container(run, tag)],
            runtimePlatform={"operatingSystemFamily": "LINUX", "cpuArchitecture": "X86_64"},
            tags=run.tag_list("key", "value"),
        )["taskDefinition"]

    previous = run.ensure("ecs task-definition", find_previous, lambda: register(PREVIOUS_IMAGE_TAG),
                          lambda t: t["taskDefinitionArn"])
    run.built["previous task definition"] = previous["taskDefinitionArn"]
    run.built["task definition"] = run.ensure("ecs task-definition", find_current,
                                              lambda: register(CURRENT_IMAGE_TAG),
                                              lambda t: t["taskDefinitionArn"])["taskDefinitionArn"]


def service(run: Run) -> None:
    ecs = run.client("ecs")
    cluster = run.need("cluster")
    name = run.name("backend")
    expect = run.expect("ECS-09")
    run.need("listeners")  # AWS refuses a target group that no listener uses yet

    def find() -> dict[str, Any] | None:
        services = ecs.describe_services(cluster=cluster, services=[name])["services"]
        return next((s for s in services if s["status"] == "ACTIVE"), None)

    def create() -> dict[str, Any]:
        return ecs.create_service(
            cluster=cluster, serviceName=name, taskDefinition=run.need("task definition"),
            desiredCount=expect["desired_count"], launchType=expect["launch_type"],
            networkConfiguration={"awsvpcConfiguration": {
                "subnets": run.need("subnets")["private"], "securityGroups": [run.need("security groups")["tasks"]],
                "assignPublicIp": "DISABLED"}},
            loadBalancers=[{"targetGroupArn": run.need("target group")["TargetGroupArn"],
                            "containerName": CONTAINER, "containerPort": expect["container_port"]}],
            healthCheckGracePeriodSeconds=60, schedulingStrategy="REPLICA",
            deploymentController={"type": "ECS"},
            deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True},
                                     "maximumPercent": 200, "minimumHealthyPercent": 100},
            propagateTags="SERVICE", tags=run.tag_list("key", "value"),
        )["service"]

    run.built["service"] = run.ensure("ecs service", find, create, lambda s: s["serviceName"])["serviceName"]


def autoscaling(run: Run) -> None:
    """Target tracking on CPU and memory between the plan's bounds (ECS-11/12)."""
    aas = run.client("application-autoscaling")
    resource = f"service/{run.need('cluster')}/{run.need('service')}"
    dimension = "ecs:service:DesiredCount"
    bounds, targets = run.expect("ECS-11"), run.expect("ECS-12")

    def find_target() -> dict[str, Any] | None:
        return first(aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource],
                                                   ScalableDimension=dimension)["ScalableTargets"])

    def create_target() -> dict[str, Any]:
        aas.register_scalable_target(ServiceNamespace="ecs", ResourceId=resource, ScalableDimension=dimension,
                                     MinCapacity=bounds["min_capacity"], MaxCapacity=bounds["max_capacity"],
                                     Tags=run.plan.tags(run.env))
        return {"ResourceId": resource}

    run.ensure("application-autoscaling scalable-target", find_target, create_target, lambda t: t["ResourceId"])
    policies = {run.name("cpu-target"): (targets["cpu_target"], "ECSServiceAverageCPUUtilization"),
                run.name("memory-target"): (targets["memory_target"], "ECSServiceAverageMemoryUtilization")}
    present = {p["PolicyName"] for p in aas.describe_scaling_policies(
        ServiceNamespace="ecs", ResourceId=resource, ScalableDimension=dimension,
        PolicyNames=list(policies))["ScalingPolicies"]}
    for name, (value, metric) in policies.items():
        def create(name: str = name, value: float = value, metric: str = metric) -> str:
            aas.put_scaling_policy(
                PolicyName=name, ServiceNamespace="ecs", ResourceId=resource, ScalableDimension=dimension,
                PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration={
                    "TargetValue": value, "PredefinedMetricSpecification": {"PredefinedMetricType": metric},
                    "ScaleInCooldown": targets["cooldown_s"], "ScaleOutCooldown": targets["cooldown_s"]})
            return name

        run.ensure("application-autoscaling scaling-policy", lambda name=name: name if name in present else None,
                   create, lambda n: n)
