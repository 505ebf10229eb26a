"""The internet-facing ALB (ALB-01..08): the balancer with access logs, the app's target group, an
imported certificate, the HTTP-redirect and HTTPS listeners, and the optional web ACL."""
from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.local.provision.context import Run, absent_on

# Choices the plan leaves open, each a reasonable production default.
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"  # TLS 1.3 + 1.2 only: meets ALB-03's "1.2 or later"


def load_balancer(run: Run) -> None:
    elbv2 = run.client("elbv2")
    name = run.name("alb")
    subnets = run.need("subnets")["public"]
    group = run.need("security groups")["alb"]
    bucket = run.need("log bucket")

    def find() -> dict[str, Any] | None:
        return absent_on(lambda: elbv2.describe_load_balancers(Names=[name])["LoadBalancers"][0],
                         "LoadBalancerNotFound")

    def create() -> dict[str, Any]:
        alb = elbv2.create_load_balancer(Name=name, Subnets=subnets, SecurityGroups=[group],
                                         Scheme=run.expect("ALB-01")["scheme"], Type="application",
                                         IpAddressType="ipv4", Tags=run.tag_list())["LoadBalancers"][0]
        attributes = {"access_logs.s3.enabled": "true", "access_logs.s3.bucket": bucket,
                      "access_logs.s3.prefix": "alb", "routing.http.drop_invalid_header_fields.enabled": "true"}
        elbv2.modify_load_balancer_attributes(LoadBalancerArn=alb["LoadBalancerArn"],
                                              Attributes=[{"Key": k, "Value": v} for k, v in attributes.items()])
        return alb

    run.built["load balancer"] = run.ensure("elbv2 load-balancer", find, create, lambda a: a["LoadBalancerName"])


def target_group(run: Run) -> None:
    elbv2 = run.client("elbv2")
    name = run.name("app")
    expect = run.expect("ALB-04")

    def find() -> dict[str, Any] | None:
        return absent_on(lambda: elbv2.describe_target_groups(Names=[name])["TargetGroups"][0],
                         "TargetGroupNotFound")

    def create() -> dict[str, Any]:
        group = elbv2.create_target_group(
            Name=name, Protocol=expect["protocol"], Port=expect["port"], VpcId=run.need("vpc"),
            TargetType=expect["target_type"], HealthCheckPath=expect["health_check_path"],
            HealthCheckProtocol=expect["protocol"], Matcher={"HttpCode": "200"}, Tags=run.tag_list(),
        )["TargetGroups"][0]
        attributes = {"stickiness.enabled": "true", "stickiness.type": "lb_cookie",
                      "stickiness.lb_cookie.duration_seconds": "86400", "deregistration_delay.timeout_seconds": "30"}
        elbv2.modify_target_group_attributes(TargetGroupArn=group["TargetGroupArn"],
                                             Attributes=[{"Key": k, "Value": v} for k, v in attributes.items()])
        return group

    run.built["target group"] = run.ensure("elbv2 target-group", find, create, lambda g: g["TargetGroupName"])


def _self_signed(common_name: str, dns_name: str) -> tuple[bytes, bytes]:
    """An emulator cannot validate a requested certificate (moto's stays PENDING_VALIDATION, which AWS
    would refuse on a listener); an imported one is ISSUED at once, everywhere."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def certificate(run: Run) -> None:
    acm = run.client("acm")
    common_name = run.name("alb")
    dns_name = run.need("load balancer")["DNSName"]

    def find() -> dict[str, Any] | None:
        listed = acm.list_certificates()["CertificateSummaryList"]
        return next((c for c in listed if c["DomainName"] == common_name), None)

    def create() -> dict[str, Any]:
        cert, key = _self_signed(common_name, dns_name)
        return acm.import_certificate(Certificate=cert, PrivateKey=key, Tags=run.tag_list())

    found = run.ensure("acm certificate", find, create, lambda c: c["CertificateArn"])
    run.built["certificate"] = found["CertificateArn"]


def listeners(run: Run) -> None:
    """HTTP only redirects (ALB-02); HTTPS terminates TLS and forwards to the app (ALB-03)."""
    elbv2 = run.client("elbv2")
    alb = run.need("load balancer")["LoadBalancerArn"]
    group = run.need("target group")["TargetGroupArn"]
    certificate_arn = run.need("certificate")
    http, https = run.expect("ALB-02"), run.expect("ALB-03")
    present = {lst["Port"]: lst for lst in elbv2.describe_listeners(LoadBalancerArn=alb)["Listeners"]}
    redirect = {"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": http["redirect_port"],
                                                       "StatusCode": http["status_code"]}}
    specs = {
        http["port"]: {"Protocol": "HTTP", "DefaultActions": [redirect]},
        https["port"]: {"Protocol": "HTTPS", "SslPolicy": SSL_POLICY,
                        "Certificates": [{"CertificateArn": certificate_arn}],
                        "DefaultActions": [{"Type": "forward", "TargetGroupArn": group}]},
    }
    for port, spec in specs.items():
        def create(port: int = port, spec: dict[str, Any] = spec) -> dict[str, Any]:
            return elbv2.create_listener(LoadBalancerArn=alb, Port=port, Tags=run.tag_list(), **spec)["Listeners"][0]

        run.ensure("elbv2 listener", lambda port=port: present.get(port), create, lambda lst: lst["ListenerArn"])
    run.built["listeners"] = True


def web_acl(run: Run) -> None:
    """ALB-08 (optional): AWS's common managed rule set in front of the ALB."""
    waf = run.client("wafv2")
    name = run.name("web-acl")
    alb = run.need("load balancer")["LoadBalancerArn"]

    def visibility(metric: str) -> dict[str, Any]:
        return {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": metric}

    def find() -> dict[str, Any] | None:
        return next((a for a in waf.list_web_acls(Scope="REGIONAL")["WebACLs"] if a["Name"] == name), None)

    def create() -> dict[str, Any]:
        rule = {"Name": "aws-common", "Priority": 0, "OverrideAction": {"None": {}},
                "Statement": {"ManagedRuleGroupStatement": {"VendorName": "AWS",
                                                            "Name": "AWSManagedRulesCommonRuleSet"}},
                "VisibilityConfig": visibility(f"{name}-common")}
        return waf.create_web_acl(Name=name, Scope="REGIONAL", DefaultAction={"Allow": {}}, Rules=[rule],
                                  VisibilityConfig=visibility(name), Tags=run.tag_list())["Summary"]

    acl = run.ensure("wafv2 web-acl", find, create, lambda a: a["Name"])
    if not waf.get_web_acl_for_resource(ResourceArn=alb).get("WebACL"):
        waf.associate_web_acl(WebACLArn=acl["ARN"], ResourceArn=alb)
