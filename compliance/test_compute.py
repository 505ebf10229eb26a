"""§3 Compute and the Scaling Strategy: the ECS cluster, the task definition the service runs, the service,
its auto scaling, and the tasks' network exposure."""
from __future__ import annotations

import pytest

from harness.compliance.facts import container, ingress_sources, not_observable, subnets_of_tier, the_one
from harness.util.redact import plain_credentials



def _service(services, evidence):
    service = the_one(services, "ECS service")
    evidence("service", {k: service.get(k) for k in ("serviceName", "launchType", "desiredCount", "taskDefinition",
                                                     "networkConfiguration", "loadBalancers",
                                                     "deploymentConfiguration", "deploymentController")})
    return service


def _app(task_definitions, app_port, evidence):
    td = the_one(task_definitions, "task definition of the service")
    app = container(td, app_port)
    evidence("task definition", {**{k: td.get(k) for k in ("taskDefinitionArn", "requiresCompatibilities",
                                                            "networkMode", "cpu", "memory", "taskRoleArn",
                                                            "executionRoleArn")}, "container": app})
    return td, app


@pytest.mark.requirement("ECS-01")
def test_cluster_with_container_insights(clusters, evidence):
    cluster = the_one(clusters, "ECS cluster")
    evidence("cluster", {k: cluster.get(k) for k in ("clusterName", "settings", "status")})
    settings = {s["name"]: s["value"] for s in cluster.get("settings", [])}
    assert settings.get("containerInsights") in ("enabled", "enhanced"), \
        f"Container Insights is {settings.get('containerInsights', 'not set')}"


@pytest.mark.requirement("ECS-02")
def test_task_definition_size_and_mode(task_definitions, app_port, expect, evidence):
    td, _ = _app(task_definitions, app_port, evidence)
    assert expect["compatibility"] in td.get("requiresCompatibilities", []), \
        f"requiresCompatibilities is {td.get('requiresCompatibilities')}"
    assert td.get("networkMode") == expect["network_mode"], f"network mode is {td.get('networkMode')}"
    assert (int(td.get("cpu", 0)), int(td.get("memory", 0))) == (expect["cpu"], expect["memory"]), \
        f"CPU/memory is {td.get('cpu')}/{td.get('memory')}, the plan says {expect['cpu']}/{expect['memory']}"


@pytest.mark.requirement("ECS-03")
def test_container_port(task_definitions, expect, evidence):
    td, app = _app(task_definitions, expect["container_port"], evidence)
    ports = [m.get("containerPort") for m in app.get("portMappings", [])]
    assert expect["container_port"] in ports, f"the app container maps ports {ports}"


@pytest.mark.requirement("ECS-04")
def test_container_environment(task_definitions, app_port, expect, evidence):
    _, app = _app(task_definitions, app_port, evidence)
    env = {e["name"]: e.get("value") for e in app.get("environment", [])}
    for name, value in expect["values"].items():
        assert env.get(name) == value, f"{name} is {env.get(name)!r}, the plan says {value!r}"
    missing = [name for name in expect["present"] if not env.get(name)]
    assert not missing, f"the container environment lacks {missing}"


@pytest.mark.requirement("ECS-05")
def test_secrets_come_from_secrets_manager(task_definitions, secrets, app_port, plan, env_name, expect, evidence):
    _, app = _app(task_definitions, app_port, evidence)
    plain = {e["name"] for e in app.get("environment", [])}
    injected = {s["name"]: s["valueFrom"] for s in app.get("secrets", [])}
    by_name = {s["Name"]: s["ARN"] for s in secrets}
    prefix = plan.secret_prefix(env_name)
    for variable, secret in expect["secrets"].items():
        assert variable not in plain, f"{variable} is set in plain environment"
        arn = by_name.get(prefix + secret)
        assert arn, f"secret {prefix + secret} does not exist"
        source = injected.get(variable, "")
        # valueFrom may name the secret's full ARN or add a JSON key and version after it.
        assert source.startswith(arn), f"{variable} is not injected from {prefix + secret}: valueFrom {source!r}"
    # Names and reasons only: the snapshot holds no value of these (harness.util.redact), and neither does this.
    held = plain_credentials(app.get("environment", []), expect.get("plain", ()))
    evidence("plain variables holding a credential", held)
    listed = "; ".join(f"{name} ({why})" for name, why in sorted(held.items()))
    assert not held, f"plain environment variables hold credentials, move them to Secrets Manager: {listed}"


@pytest.mark.requirement("ECS-06")
def test_logs_go_to_cloudwatch(task_definitions, log_groups, app_port, expect, evidence):
    _, app = _app(task_definitions, app_port, evidence)
    config = app.get("logConfiguration") or {}
    assert config.get("logDriver") == expect["log_driver"], f"log driver is {config.get('logDriver')}"
    group = config.get("options", {}).get("awslogs-group")
    assert group in {g["logGroupName"] for g in log_groups}, f"log group {group!r} does not exist"


@pytest.mark.requirement("ECS-07")
def test_runs_as_non_root(task_definitions, app_port, expect, evidence):
    _, app = _app(task_definitions, app_port, evidence)
    user = str(app.get("user") or "")
    assert user, "the container sets no user, so it runs as root"
    assert user.split(":")[0] not in expect["forbidden_users"], f"the container runs as {user!r}"


@pytest.mark.requirement("ECS-08")
def test_task_and_execution_roles(task_definitions, app_port, evidence):
    td, _ = _app(task_definitions, app_port, evidence)
    assert td.get("taskRoleArn"), "no task role"
    assert td.get("executionRoleArn"), "no execution role"


@pytest.mark.requirement("ECS-09")
def test_service_placement(services, target_groups, subnets, route_tables, plan, expect, evidence):
    service = _service(services, evidence)
    assert service.get("launchType") == expect["launch_type"] or any(
        s.get("capacityProvider", "").startswith(expect["launch_type"])
        for s in service.get("capacityProviderStrategy", [])), f"launch type is {service.get('launchType')}"
    assert service.get("desiredCount") == expect["desired_count"], \
        f"desired count is {service.get('desiredCount')}, the plan says {expect['desired_count']}"
    vpc_config = service.get("networkConfiguration", {}).get("awsvpcConfiguration", {})
    private = {s["SubnetId"] for s in subnets_of_tier("private", subnets, route_tables, plan)}
    assert vpc_config.get("subnets") and set(vpc_config["subnets"]) <= private, \
        f"the service runs in {vpc_config.get('subnets')}, not the private subnets {sorted(private)}"
    assert vpc_config.get("assignPublicIp") == "DISABLED", f"assignPublicIp is {vpc_config.get('assignPublicIp')}"
    groups = {tg["TargetGroupArn"] for tg in target_groups if tg.get("LoadBalancerArns")}
    attached = [lb for lb in service.get("loadBalancers", [])
                if lb.get("targetGroupArn") in groups and lb.get("containerPort") == expect["container_port"]]
    assert attached, f"the service is not attached to the ALB's target group on {expect['container_port']}: " \
                     f"{service.get('loadBalancers')}"


@pytest.mark.requirement("ECS-10")
def test_rolling_deployment_with_circuit_breaker(services, evidence):
    service = _service(services, evidence)
    controller = (service.get("deploymentController") or {}).get("type", "ECS")
    assert controller == "ECS", f"deployment controller is {controller}, not rolling updates"
    if "deploymentConfiguration" not in service:
        not_observable("the ECS service reports no deploymentConfiguration")
    breaker = service["deploymentConfiguration"].get("deploymentCircuitBreaker") or {}
    assert breaker.get("enable") is True, "the deployment circuit breaker is off"
    assert breaker.get("rollback") is True, "the circuit breaker does not roll back"


@pytest.mark.requirement("ECS-11")
def test_scalable_target(scalable_targets, expect, evidence):
    target = the_one([t for t in scalable_targets if t.get("ScalableDimension") == "ecs:service:DesiredCount"],
                     "auto scaling target on the service")
    evidence("scalable target", target)
    assert (target["MinCapacity"], target["MaxCapacity"]) == (expect["min_capacity"], expect["max_capacity"]), \
        f"capacity is {target['MinCapacity']}..{target['MaxCapacity']}, " \
        f"the plan says {expect['min_capacity']}..{expect['max_capacity']}"


@pytest.mark.requirement("ECS-12")
def test_target_tracking_policies(scaling_policies, expect, evidence):
    evidence("scaling policies", scaling_policies)
    wanted = {"ECSServiceAverageCPUUtilization": expect["cpu_target"],
              "ECSServiceAverageMemoryUtilization": expect["memory_target"]}
    found = {}
    for p in scaling_policies:
        config = p.get("TargetTrackingScalingPolicyConfiguration") or {}
        metric = (config.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
        if p.get("PolicyType") == "TargetTrackingScaling" and metric in wanted:
            found[metric] = config
    for metric, target in wanted.items():
        assert metric in found, f"no target-tracking policy on {metric}"
        config = found[metric]
        assert float(config.get("TargetValue", -1)) == target, f"{metric} targets {config.get('TargetValue')}, not {target}"
        for cooldown in ("ScaleOutCooldown", "ScaleInCooldown"):
            assert config.get(cooldown) == expect["cooldown_s"], \
                f"{metric} {cooldown} is {config.get(cooldown)}, the plan says {expect['cooldown_s']} s"


@pytest.mark.requirement("ECS-13")
def test_tasks_admit_only_the_alb(services, load_balancers, security_groups, expect, evidence):
    service = _service(services, evidence)
    alb_groups = {g for lb in load_balancers for g in lb.get("SecurityGroups", [])}
    assert alb_groups, "no ALB security group was discovered"
    task_groups = set(service.get("networkConfiguration", {}).get("awsvpcConfiguration", {}).get("securityGroups", []))
    grants = [(g["GroupId"], lo, hi, src) for g in security_groups if g["GroupId"] in task_groups
              for lo, hi, src in ingress_sources(g)]
    evidence("task ingress", grants)
    port = expect["port"]
    bad = [g for g in grants if g[3] not in alb_groups or (g[1], g[2]) != (port, port)]
    assert not bad, f"the tasks admit more than port {port} from the ALB: {bad}"
    assert grants, f"the tasks admit nothing on {port}: the ALB cannot reach them"


