"""§4 Load Balancing: the ALB, its listeners, its target group and its exposure."""
from __future__ import annotations

import re

import pytest

from harness.compliance.facts import ingress_sources, not_observable, subnets_of_tier, the_one


def _alb(load_balancers, evidence):
    lb = the_one(load_balancers, "load balancer")
    evidence("load balancer", {k: lb.get(k) for k in ("LoadBalancerName", "Type", "Scheme", "AvailabilityZones",
                                                      "SecurityGroups", "State")})
    return lb


def _listener(listeners, port):
    found = [ls for ls in listeners if ls.get("Port") == port]
    return found[0] if found else None


@pytest.mark.requirement("ALB-01")
def test_internet_facing_alb_in_public_subnets(load_balancers, subnets, route_tables, plan, expect, evidence):
    lb = _alb(load_balancers, evidence)
    assert lb.get("Type") == "application", f"the load balancer is of type {lb.get('Type')}"
    assert lb.get("Scheme") == expect["scheme"], f"scheme is {lb.get('Scheme')}"
    zones = lb.get("AvailabilityZones", [])
    public = {s["SubnetId"] for s in subnets_of_tier("public", subnets, route_tables, plan)}
    placed = {z["SubnetId"] for z in zones}
    assert placed == public, f"the ALB is in {sorted(placed)}, the public subnets are {sorted(public)}"
    assert len({z["ZoneName"] for z in zones}) == expect["azs"], f"the ALB spans {len(zones)} AZ(s)"


@pytest.mark.requirement("ALB-02")
def test_http_redirects_to_https(listeners, expect, evidence):
    listener = _listener(listeners, expect["port"])
    evidence("HTTP listener", listener)
    assert listener, f"no listener on port {expect['port']}"
    actions = listener.get("DefaultActions", [])
    assert all(a.get("Type") == "redirect" for a in actions) and actions, \
        f"the port-{expect['port']} listener does not only redirect: {[a.get('Type') for a in actions]}"
    redirect = actions[0].get("RedirectConfig", {})
    assert redirect.get("Protocol") == "HTTPS" and str(redirect.get("Port")) == expect["redirect_port"], \
        f"redirect goes to {redirect.get('Protocol')}:{redirect.get('Port')}"
    assert redirect.get("StatusCode") == expect["status_code"], f"redirect status is {redirect.get('StatusCode')}"


def _minimum_tls(policy: str) -> str:
    """The oldest TLS version an ELB policy admits, read from its name: ELBSecurityPolicy-TLS13-1-2-2021-06
    and ELBSecurityPolicy-FS-1-2-Res-2020-10 admit 1.2 and up; ELBSecurityPolicy-2016-08 and the other
    legacy names admit 1.0."""
    match = re.search(r"(?:TLS(?:13)?|FS)-(\d)-(\d)", policy)
    return f"{match.group(1)}.{match.group(2)}" if match else "1.0"


@pytest.mark.requirement("ALB-03")
def test_https_listener_with_certificate_and_modern_tls(listeners, expect, evidence):
    listener = _listener(listeners, expect["port"])
    evidence("HTTPS listener", listener)
    assert listener, f"no listener on port {expect['port']}"
    assert listener.get("Protocol") == "HTTPS", f"port {expect['port']} speaks {listener.get('Protocol')}"
    certs = [c.get("CertificateArn", "") for c in listener.get("Certificates", [])]
    assert any(":acm:" in c for c in certs), f"no ACM certificate on the listener: {certs}"
    policy = listener.get("SslPolicy") or ""
    minimum = _minimum_tls(policy)
    assert minimum >= expect["min_tls"], f"SSL policy {policy!r} admits TLS {minimum}"


@pytest.mark.requirement("ALB-04")
def test_target_group(target_groups, services, expect, evidence):
    """The tasks' port is the container port ECS registers them on (the service's load-balancer entry for
    the group), not the group's own default port (80 from CDK's ApplicationLoadBalancedFargateService)."""
    tg = the_one([t for t in target_groups if t.get("LinkedToService")], "target group of the service")
    entries = [lb for s in services for lb in s.get("loadBalancers", [])
               if lb.get("targetGroupArn") == tg["TargetGroupArn"]]
    evidence("target group", tg)
    evidence("service load-balancer entries", entries)
    seen = (tg.get("Protocol"), tg.get("TargetType"), tg.get("HealthCheckPath"))
    wanted = (expect["protocol"], expect["target_type"], expect["health_check_path"])
    assert seen == wanted, f"target group is (protocol, type, health path) {seen}, the plan says {wanted}"
    ports = sorted({lb.get("containerPort") for lb in entries}, key=str)
    assert ports == [expect["port"]], \
        f"the service registers its tasks in the target group on container port {ports}, the plan says {expect['port']}"
    health_port = tg.get("HealthCheckPort")
    if health_port is None:
        not_observable("the target group reports no HealthCheckPort")
    assert str(health_port) in ("traffic-port", str(expect["port"])), \
        f"health checks go to port {health_port}, not the traffic port {expect['port']}"


@pytest.mark.requirement("ALB-05")
def test_stickiness(target_groups, tg_attributes, evidence):
    tg = the_one([t for t in target_groups if t.get("LinkedToService")], "target group of the service")
    attrs = tg_attributes.get(tg["TargetGroupArn"], {})
    evidence("target group attributes", attrs)
    assert attrs.get("stickiness.enabled") == "true", "stickiness is off"


@pytest.mark.requirement("ALB-06")
def test_alb_admits_only_http_and_https(load_balancers, security_groups, expect, evidence):
    lb = _alb(load_balancers, evidence)
    groups = [g for g in security_groups if g["GroupId"] in lb.get("SecurityGroups", [])]
    assert groups, "the ALB has no security group in the VPC"
    grants = [(g["GroupId"], lo, hi, src) for g in groups for lo, hi, src in ingress_sources(g)]
    evidence("ALB ingress", grants)
    bad = [g for g in grants if g[1] != g[2] or g[1] not in expect["ports"]]
    assert not bad, f"the ALB admits ports other than {expect['ports']}: {bad}"


@pytest.mark.requirement("ALB-07")
def test_access_logs(load_balancers, lb_attributes, access_log_buckets, evidence):
    lb = _alb(load_balancers, evidence)
    attrs = lb_attributes.get(lb["LoadBalancerArn"], {})
    evidence("load balancer attributes", attrs)
    assert attrs.get("access_logs.s3.enabled") == "true", "access logs are off"
    bucket = attrs.get("access_logs.s3.bucket")
    assert bucket and access_log_buckets.get(bucket), f"access-log bucket {bucket!r} does not exist"


@pytest.mark.requirement("ALB-08")
def test_waf_web_acl(load_balancers, web_acls, evidence):
    lb = _alb(load_balancers, evidence)
    acl = web_acls.get(lb["LoadBalancerArn"])
    evidence("web ACL", acl)
    assert acl, "no WAF web ACL is associated with the ALB"
