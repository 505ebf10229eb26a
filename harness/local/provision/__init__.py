"""Build a plan-compliant Dougust environment into an AWS-compatible emulator, through boto3 only.

The local target needs something for the compliance suite to discover, and that something must be what
the plan asks for, so every value comes from the plan's `expected(env)`. It is written for emulators
(moto, LocalStack): their resources are usable the moment the create call returns, so nothing here waits.

Re-running is safe: every resource is looked up first (EC2 ones by the plan's tags plus a Name tag, the
rest by the name this module gives them) and only what is missing is created. An endpoint that does not
offer a service (LocalStack community answers 501 for RDS, ECS, ELBv2, ...) gets everything else; the
report says what was skipped and why.
"""
from __future__ import annotations

import datetime as dt
import io
import ipaddress
import json
import secrets
import string
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.compliance.inventory import elb_metric_id
from harness.plan import Plan
from harness.target import is_unavailable

T = TypeVar("T")

# Choices the plan leaves open; each is a reasonable production default, kept here in one place.
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"  # TLS 1.3 + 1.2 only: meets ALB-03's "1.2 or later"
LOG_RETENTION_DAYS = 30
SECRET_ROTATION_DAYS = 30
APP_USER = "1000"  # the `node` user of the official Node.js images
CONTAINER = "backend"
PREVIOUS_IMAGE_TAG = "2026.11.1"  # the release before the current one: the deploy history's first revision
CURRENT_IMAGE_TAG = "latest"  # what the service runs; the smoke gate's default expected version
APP_SETTINGS = {"JWT_ACCESS_TOKEN_TTL": "15m", "JWT_REFRESH_TOKEN_TTL": "30d"}
DB_MASTER_USER = "dougust"
DB_NAME = "dougust"
ECS_CPU_ALARM = 85.0
ECS_MEMORY_ALARM = 85.0
DB_CONNECTIONS_ALARM = 100.0
STORAGE_HEADROOM = 2  # MaxAllocatedStorage = allocated x this, so storage auto-scaling (DB-05) is on
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass
class ProvisionReport:
    """What one run did, one "<service> <kind> <id>" entry per resource, so a re-run can be judged by
    comparing reports; `skipped` maps a service (or a step that needed it) to the reason."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


class _ServiceMissing(Exception):
    """The endpoint lacks a service: the step stops, and the report records the reason once."""

    def __init__(self, service: str, reason: str):
        super().__init__(reason)
        self.service = service
        self.reason = reason


class _Blocked(Exception):
    """A step needs something an earlier, skipped step would have built."""


class _Service:
    """A boto3 client whose calls raise `_ServiceMissing` once the service proved absent, so a step stops
    at its first call to it and the rest of the environment still gets built."""

    def __init__(self, name: str, client: Any, skipped: dict[str, str]):
        self._name = name
        self._client = client
        self._skipped = skipped

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._client, attr)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._name in self._skipped:
                raise _ServiceMissing(self._name, self._skipped[self._name])
            try:
                return target(*args, **kwargs)
            except ClientError as exc:
                if not is_unavailable(exc):
                    raise
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                raise _ServiceMissing(
                    self._name, f"{self._name} is not available at this endpoint (HTTP {status})"
                ) from exc

        return call


@dataclass
class _Run:
    clients: Callable[[str], Any]
    plan: Plan
    env: str
    report: ProvisionReport
    built: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, _Service] = field(default_factory=dict)

    def client(self, service: str) -> _Service:
        if service not in self._cache:
            self._cache[service] = _Service(service, self.clients(service), self.report.skipped)
        return self._cache[service]

    def expect(self, requirement_id: str) -> dict[str, Any]:
        return self.plan.requirements[requirement_id].expected(self.env)

    def name(self, suffix: str) -> str:
        return f"{self.plan.project}-{self.env}-{suffix}"

    def need(self, key: str) -> Any:
        if key not in self.built:
            raise _Blocked(key)
        return self.built[key]

    @property
    def region(self) -> str:
        return self.plan.environment(self.env).region

    @property
    def account(self) -> str:
        return self.need("account")

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"

    # Tags in the shapes the different APIs take.
    def tag_list(self, key: str = "Key", value: str = "Value", **extra: str) -> list[dict[str, str]]:
        return [{key: k, value: v} for k, v in {**self.plan.tags(self.env), **extra}.items()]

    def tag_specs(self, resource_type: str, name: str) -> list[dict[str, Any]]:
        return [{"ResourceType": resource_type, "Tags": self.tag_list(Name=name)}]

    def tag_filters(self) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{k}", "Values": [v]} for k, v in self.plan.tags(self.env).items()]

    def ensure(self, label: str, find: Callable[[], T | None], create: Callable[[], T],
               ident: Callable[[T], str]) -> T:
        """Find-then-create, recording which of the two happened: the whole idempotency contract."""
        found = find()
        if found is not None:
            self.report.existing.append(f"{label} {ident(found)}")
            return found
        made = create()
        self.report.created.append(f"{label} {ident(made)}")
        return made


def _absent_on(call: Callable[[], T], *codes: str) -> T | None:
    """The result of a lookup, or None when the API says "no such thing" with one of these codes."""
    try:
        return call()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in codes:
            return None
        raise


def _first(items: list[T]) -> T | None:
    return items[0] if items else None


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The item whose Name tag is `name`: moto 5.2.5 ignores tag filters on describe_nat_gateways, so the
    Name is matched here rather than trusted to the server."""
    return next((i for i in items if {"Key": "Name", "Value": name} in i.get("Tags", [])), None)


def _password(length: int = 32) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _trust(service: str) -> str:
    return _policy({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})


# --- account -------------------------------------------------------------------------------------------

def _account(run: _Run) -> None:
    """ARNs and globally unique bucket names need the account id of whatever credentials the caller uses."""
    run.built["account"] = run.client("sts").get_caller_identity()["Account"]


# --- network -------------------------------------------------------------------------------------------

def _availability_zones(run: _Run) -> list[str]:
    letters = "abcdefghij"
    return [f"{run.region}{letters[i]}" for i in range(run.expect("NET-02")["azs"])]


def _vpc(run: _Run) -> dict[str, Any]:
    ec2 = run.client("ec2")
    expect = run.expect("NET-01")

    def find() -> dict[str, Any] | None:
        return _named(ec2.describe_vpcs(Filters=run.tag_filters())["Vpcs"], run.name("vpc"))

    def create() -> dict[str, Any]:
        vpc = ec2.create_vpc(CidrBlock=expect["cidr"], TagSpecifications=run.tag_specs("vpc", run.name("vpc")))["Vpc"]
        ec2.modify_vpc_attribute(VpcId=vpc["VpcId"], EnableDnsSupport={"Value": expect["dns_support"]})
        ec2.modify_vpc_attribute(VpcId=vpc["VpcId"], EnableDnsHostnames={"Value": expect["dns_hostnames"]})
        _tag_vpc_defaults(run, vpc["VpcId"])
        return vpc

    return run.ensure("ec2 vpc", find, create, lambda v: v["VpcId"])


def _tag_vpc_defaults(run: _Run, vpc_id: str) -> None:
    """The default security group and main route table come with the VPC; discovery by VPC sees them,
    so they carry the plan's tags too (TAG-01)."""
    ec2 = run.client("ec2")
    in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
    groups = ec2.describe_security_groups(Filters=[*in_vpc, {"Name": "group-name", "Values": ["default"]}])
    tables = ec2.describe_route_tables(Filters=[*in_vpc, {"Name": "association.main", "Values": ["true"]}])
    ids = [g["GroupId"] for g in groups["SecurityGroups"]] + [t["RouteTableId"] for t in tables["RouteTables"]]
    ec2.create_tags(Resources=ids, Tags=run.tag_list())


def _subnet_layout(run: _Run, vpc_cidr: str) -> list[tuple[str, int, str, str]]:
    """(tier, number in tier, AZ, CIDR) for every subnet: /20 blocks in order, each tier over the AZs."""
    azs = _availability_zones(run)
    blocks = ipaddress.ip_network(vpc_cidr).subnets(new_prefix=20)
    counts = {"public": run.expect("NET-02")["count"], "private": run.expect("NET-03")["count"],
              "isolated": run.expect("NET-04")["count"]}
    return [(tier, i + 1, azs[i % len(azs)], str(next(blocks)))
            for tier, count in counts.items() for i in range(count)]


def _subnets(run: _Run, vpc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    ec2 = run.client("ec2")
    tier_tag = run.plan.plan.subnet_tier_tag
    tiers = run.plan.plan.subnet_tiers.model_dump()
    subnets: dict[str, list[dict[str, Any]]] = {tier: [] for tier in tiers}
    for tier, number, az, cidr in _subnet_layout(run, vpc["CidrBlock"]):
        name = run.name(f"{tier}-{number}")

        def find(name: str = name) -> dict[str, Any] | None:
            filters = [*run.tag_filters(), {"Name": "vpc-id", "Values": [vpc["VpcId"]]}]
            return _named(ec2.describe_subnets(Filters=filters)["Subnets"], name)

        def create(name: str = name, tier: str = tier, az: str = az, cidr: str = cidr) -> dict[str, Any]:
            specs = [{"ResourceType": "subnet", "Tags": run.tag_list(Name=name, **{tier_tag: tiers[tier]})}]
            return ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock=cidr, AvailabilityZone=az,
                                     TagSpecifications=specs)["Subnet"]

        subnets[tier].append(run.ensure("ec2 subnet", find, create, lambda s: s["SubnetId"]))
    return subnets


def _internet_gateway(run: _Run, vpc_id: str) -> str:
    ec2 = run.client("ec2")

    def find() -> dict[str, Any] | None:
        filters = [{"Name": "attachment.vpc-id", "Values": [vpc_id]}]
        return _first(ec2.describe_internet_gateways(Filters=filters)["InternetGateways"])

    def create() -> dict[str, Any]:
        igw = ec2.create_internet_gateway(TagSpecifications=run.tag_specs("internet-gateway", run.name("igw")))
        igw_id = igw["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id)
        return igw["InternetGateway"]

    return run.ensure("ec2 internet-gateway", find, create, lambda g: g["InternetGatewayId"])["InternetGatewayId"]


def _nat_gateways(run: _Run, vpc_id: str, public: list[dict[str, Any]]) -> dict[str, str]:
    """One NAT per AZ, each in that AZ's public subnet with its own EIP (NET-06); returns AZ -> NAT id."""
    ec2 = run.client("ec2")
    nats: dict[str, str] = {}
    for subnet in public[: run.expect("NET-06")["count"]]:
        az = subnet["AvailabilityZone"]
        name = run.name(f"nat-{az[-1]}")

        def find_eip(name: str = name) -> dict[str, Any] | None:
            return _named(ec2.describe_addresses(Filters=run.tag_filters())["Addresses"], name)

        def create_eip(name: str = name) -> dict[str, Any]:
            return ec2.allocate_address(Domain="vpc", TagSpecifications=run.tag_specs("elastic-ip", name))

        eip = run.ensure("ec2 elastic-ip", find_eip, create_eip, lambda a: a["AllocationId"])

        def find_nat(name: str = name) -> dict[str, Any] | None:
            filters = [*run.tag_filters(), {"Name": "vpc-id", "Values": [vpc_id]},
                       {"Name": "state", "Values": ["pending", "available"]}]
            return _named(ec2.describe_nat_gateways(Filters=filters)["NatGateways"], name)

        def create_nat(name: str = name, subnet: dict[str, Any] = subnet, eip: dict[str, Any] = eip) -> dict[str, Any]:
            return ec2.create_nat_gateway(SubnetId=subnet["SubnetId"], AllocationId=eip["AllocationId"],
                                          TagSpecifications=run.tag_specs("natgateway", name))["NatGateway"]

        nats[az] = run.ensure("ec2 nat-gateway", find_nat, create_nat, lambda n: n["NatGatewayId"])["NatGatewayId"]
    return nats


def _route_table(run: _Run, vpc_id: str, name: str, subnets: list[dict[str, Any]],
                 default_route: dict[str, str] | None) -> None:
    """A route table for these subnets; `default_route` is the 0.0.0.0/0 target, None for isolated ones."""
    ec2 = run.client("ec2")

    def find() -> dict[str, Any] | None:
        filters = [*run.tag_filters(), {"Name": "vpc-id", "Values": [vpc_id]}]
        return _named(ec2.describe_route_tables(Filters=filters)["RouteTables"], name)

    def create() -> dict[str, Any]:
        table = ec2.create_route_table(VpcId=vpc_id, TagSpecifications=run.tag_specs("route-table", name))["RouteTable"]
        if default_route:
            ec2.create_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", **default_route)
        for subnet in subnets:
            ec2.associate_route_table(RouteTableId=table["RouteTableId"], SubnetId=subnet["SubnetId"])
        return table

    run.ensure("ec2 route-table", find, create, lambda t: t["RouteTableId"])


def _network(run: _Run) -> None:
    vpc = _vpc(run)
    subnets = _subnets(run, vpc)
    igw = _internet_gateway(run, vpc["VpcId"])
    nats = _nat_gateways(run, vpc["VpcId"], subnets["public"])
    _route_table(run, vpc["VpcId"], run.name("public"), subnets["public"], {"GatewayId": igw})
    for subnet in subnets["private"]:
        az = subnet["AvailabilityZone"]
        _route_table(run, vpc["VpcId"], run.name(f"private-{az[-1]}"), [subnet], {"NatGatewayId": nats[az]})
    _route_table(run, vpc["VpcId"], run.name("isolated"), subnets["isolated"], None)
    run.built["vpc"] = vpc["VpcId"]
    run.built["subnets"] = {tier: [s["SubnetId"] for s in items] for tier, items in subnets.items()}


# --- shared log bucket ---------------------------------------------------------------------------------

def _bucket(run: _Run, name: str, policy: str | None) -> str:
    s3 = run.client("s3")

    def find() -> str | None:
        def head() -> str:
            s3.head_bucket(Bucket=name)
            return name

        return _absent_on(head, "404", "NoSuchBucket", "NotFound")

    def create() -> str:
        location = {} if run.region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": run.region}}
        s3.create_bucket(Bucket=name, **location)
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": run.tag_list()})
        if policy:
            s3.put_bucket_policy(Bucket=name, Policy=policy)
        return name

    return run.ensure("s3 bucket", find, create, lambda b: b)


def _log_bucket(run: _Run) -> None:
    """One bucket for the three log writers that need S3 (flow logs, ALB access logs, CloudTrail), with
    the bucket policy each delivery service requires on AWS."""
    name = f"{run.name('logs')}-{run.account}"
    bucket = f"arn:aws:s3:::{name}"
    account_objects = f"AWSLogs/{run.account}/*"
    owner_full_control = {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}}
    policy = _policy(
        {"Sid": "AclCheck", "Effect": "Allow", "Action": "s3:GetBucketAcl", "Resource": bucket,
         "Principal": {"Service": ["delivery.logs.amazonaws.com", "cloudtrail.amazonaws.com"]}},
        {"Sid": "FlowLogs", "Effect": "Allow", "Principal": {"Service": "delivery.logs.amazonaws.com"},
         "Action": "s3:PutObject", "Resource": f"{bucket}/{account_objects}", "Condition": owner_full_control},
        {"Sid": "AlbAccessLogs", "Effect": "Allow",
         "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
         "Action": "s3:PutObject", "Resource": f"{bucket}/alb/{account_objects}"},
        {"Sid": "CloudTrail", "Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"},
         "Action": "s3:PutObject", "Resource": f"{bucket}/cloudtrail/{account_objects}",
         "Condition": owner_full_control},
    )
    run.built["log bucket"] = _bucket(run, name, policy)


def _flow_logs(run: _Run) -> None:
    """To the bucket ARN alone: moto 5.2.5 reads a key prefix as part of the bucket name and refuses it
    (NET-07). A refusal comes back in `Unsuccessful` with HTTP 200, on AWS too, so it is raised here."""
    ec2 = run.client("ec2")
    vpc_id = run.need("vpc")
    bucket = run.need("log bucket")
    name = run.name("flow-logs")

    def find() -> dict[str, Any] | None:
        filters = [{"Name": "resource-id", "Values": [vpc_id]}]
        return _first(ec2.describe_flow_logs(Filters=filters)["FlowLogs"])

    def create() -> dict[str, Any]:
        made = ec2.create_flow_logs(ResourceType="VPC", ResourceIds=[vpc_id],
                                    TrafficType=run.expect("NET-07")["traffic_type"],
                                    LogDestinationType="s3", LogDestination=f"arn:aws:s3:::{bucket}",
                                    TagSpecifications=run.tag_specs("vpc-flow-log", name))
        if made.get("Unsuccessful"):
            raise ClientError({"Error": made["Unsuccessful"][0]["Error"]}, "CreateFlowLogs")
        return {"FlowLogId": made["FlowLogIds"][0]}

    run.ensure("ec2 flow-log", find, create, lambda f: f["FlowLogId"])


# --- security groups -----------------------------------------------------------------------------------

def _security_group(run: _Run, vpc_id: str, role: str, description: str,
                    ingress: list[dict[str, Any]]) -> str:
    ec2 = run.client("ec2")
    name = run.name(role)

    def find() -> dict[str, Any] | None:
        filters = [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}]
        return _first(ec2.describe_security_groups(Filters=filters)["SecurityGroups"])

    def create() -> dict[str, Any]:
        group = ec2.create_security_group(GroupName=name, Description=description, VpcId=vpc_id,
                                          TagSpecifications=run.tag_specs("security-group", name))
        ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=ingress,
                                             TagSpecifications=run.tag_specs("security-group-rule", name))
        return group

    return run.ensure("ec2 security-group", find, create, lambda g: g["GroupId"])["GroupId"]


def _tcp(port: int, **source: Any) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **source}


def _security_groups(run: _Run) -> None:
    """The chain internet -> ALB -> tasks -> database, each hop admitting only the one before it."""
    vpc_id = run.need("vpc")
    world = {"IpRanges": [{"CidrIp": "0.0.0.0/0"}]}  # the ALB is IPv4-only
    alb = _security_group(run, vpc_id, "alb", "Load balancer: HTTP and HTTPS from anywhere",
                          [_tcp(port, **world) for port in run.expect("ALB-06")["ports"]])
    tasks = _security_group(run, vpc_id, "tasks", "ECS tasks: the app port from the load balancer only",
                            [_tcp(run.expect("ECS-13")["port"], UserIdGroupPairs=[{"GroupId": alb}])])
    db = _security_group(run, vpc_id, "db", "Database: PostgreSQL from the ECS tasks only",
                         [_tcp(run.expect("DB-08")["port"], UserIdGroupPairs=[{"GroupId": tasks}])])
    run.built["security groups"] = {"alb": alb, "tasks": tasks, "db": db}


# --- encryption key ------------------------------------------------------------------------------------

def _kms_key(run: _Run) -> None:
    kms = run.client("kms")
    alias = f"alias/{run.name('data')}"

    def find() -> dict[str, Any] | None:
        return _absent_on(lambda: kms.describe_key(KeyId=alias)["KeyMetadata"], "NotFoundException")

    def create() -> dict[str, Any]:
        key = kms.create_key(Description=f"{run.name('data')}: database storage and exports",
                             Tags=run.tag_list("TagKey", "TagValue"))["KeyMetadata"]
        kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
        return key

    run.built["kms key"] = run.ensure("kms key", find, create, lambda k: k["KeyId"])["Arn"]


# --- database ------------------------------------------------------------------------------------------

def _maintenance_window(run: _Run) -> str:
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


def _db_subnet_group(run: _Run) -> str:
    rds = run.client("rds")
    name = run.name("db")
    subnet_ids = run.need("subnets")["isolated"]

    def find() -> dict[str, Any] | None:
        return _absent_on(lambda: rds.describe_db_subnet_groups(DBSubnetGroupName=name)["DBSubnetGroups"][0],
                          "DBSubnetGroupNotFoundFault")

    def create() -> dict[str, Any]:
        return rds.create_db_subnet_group(DBSubnetGroupName=name, SubnetIds=subnet_ids, Tags=run.tag_list(),
                                          DBSubnetGroupDescription="Isolated subnets only")["DBSubnetGroup"]

    return run.ensure("rds db-subnet-group", find, create, lambda g: g["DBSubnetGroupName"])["DBSubnetGroupName"]


def _database(run: _Run) -> None:
    rds = run.client("rds")
    subnet_group = _db_subnet_group(run)
    identifier = run.name("db")
    storage = run.expect("DB-04")

    def find() -> dict[str, Any] | None:
        return _absent_on(lambda: rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0],
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


def _database_export(run: _Run) -> None:
    """DR-02 (optional): a snapshot exported to S3, the plan's weekly full backup. Only seeded once here;
    keeping it weekly is a scheduler's job, which the emulator has not got."""
    rds = run.client("rds")
    database = run.need("database")
    bucket = _bucket(run, f"{run.name('backups')}-{run.account}", None)
    role = _role(run, "rds-export", "export.rds.amazonaws.com", _policy(
        {"Effect": "Allow", "Action": ["s3:PutObject*", "s3:GetObject*", "s3:DeleteObject*"],
         "Resource": f"arn:aws:s3:::{bucket}/*"},
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": f"arn:aws:s3:::{bucket}"},
    ))
    snapshot_id = run.name("db-export-source")

    def find_snapshot() -> dict[str, Any] | None:
        return _absent_on(lambda: rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)["DBSnapshots"][0],
                          "DBSnapshotNotFound", "DBSnapshotNotFoundFault")

    def create_snapshot() -> dict[str, Any]:
        return rds.create_db_snapshot(DBSnapshotIdentifier=snapshot_id, Tags=run.tag_list(),
                                      DBInstanceIdentifier=database["DBInstanceIdentifier"])["DBSnapshot"]

    snapshot = run.ensure("rds db-snapshot", find_snapshot, create_snapshot, lambda s: s["DBSnapshotIdentifier"])
    task_id = run.name("db-export")

    def find_export() -> dict[str, Any] | None:
        return _absent_on(lambda: rds.describe_export_tasks(ExportTaskIdentifier=task_id)["ExportTasks"][0],
                          "ExportTaskNotFound", "ExportTaskNotFoundFault")

    def create_export() -> dict[str, Any]:
        return rds.start_export_task(ExportTaskIdentifier=task_id, SourceArn=snapshot["DBSnapshotArn"],
                                     S3BucketName=bucket, S3Prefix="rds-exports", IamRoleArn=role,
                                     KmsKeyId=run.need("kms key"))

    run.ensure("rds export-task", find_export, create_export, lambda t: t["ExportTaskIdentifier"])


# --- secrets -------------------------------------------------------------------------------------------

def _database_url(run: _Run) -> str:
    """The URL carries the managed master credentials when RDS holds them; otherwise (no RDS at this
    endpoint) a random password, since nothing can connect anyway."""
    database = run.built.get("database")
    if database is None or "MasterUserSecret" not in database:
        return f"postgresql://{DB_MASTER_USER}:{_password()}@localhost:{run.expect('DB-08')['port']}/{DB_NAME}"
    managed = run.client("secretsmanager").get_secret_value(SecretId=database["MasterUserSecret"]["SecretArn"])
    credentials = json.loads(managed["SecretString"])
    endpoint = database["Endpoint"]
    user, password = quote(credentials["username"], safe=""), quote(credentials["password"], safe="")
    return f"postgresql://{user}:{password}@{endpoint['Address']}:{endpoint['Port']}/{database.get('DBName', DB_NAME)}"


def _secrets(run: _Run) -> None:
    sm = run.client("secretsmanager")
    prefix = run.plan.secret_prefix(run.env)
    listed = sm.list_secrets(Filters=[{"Key": "name", "Values": [prefix]}])["SecretList"]
    present = {s["Name"]: s for s in listed}
    arns: dict[str, str] = {}
    for short in run.expect("SEC-01")["names"]:
        name = prefix + short

        def create(name: str = name, short: str = short) -> dict[str, Any]:
            value = _database_url(run) if short == run.expect("DB-13")["secret"] else _password(64)
            return sm.create_secret(Name=name, SecretString=value, Tags=run.tag_list())

        secret = run.ensure("secretsmanager secret", lambda name=name: present.get(name), create, lambda s: s["Name"])
        arns[short] = secret["ARN"]
        if short == run.expect("SEC-02")["secret"] and not secret.get("RotationEnabled"):
            _rotate(run, secret["ARN"])
    run.built["secrets"] = arns


def _rotate(run: _Run, arn: str) -> None:
    """A rotation schedule on the database secret (SEC-02). moto takes one without a Lambda (it would
    invoke the Lambda it is given, and cannot run one); LocalStack insists on a Lambda, which it accepts
    without running it when the first rotation is immediate."""
    sm = run.client("secretsmanager")
    rules = {"AutomaticallyAfterDays": SECRET_ROTATION_DAYS}
    try:
        sm.rotate_secret(SecretId=arn, RotationRules=rules, RotateImmediately=False)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "InvalidRequestException":
            raise
        sm.rotate_secret(SecretId=arn, RotationRules=rules, RotateImmediately=True,
                         RotationLambdaARN=_rotation_function(run))


def _rotation_function(run: _Run) -> str:
    lam = run.client("lambda")
    name = run.name("secret-rotation")

    def find() -> dict[str, Any] | None:
        return _absent_on(lambda: lam.get_function(FunctionName=name)["Configuration"], "ResourceNotFoundException")

    def create() -> dict[str, Any]:
        role = _role(run, "secret-rotation", "lambda.amazonaws.com", None)
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("index.py", "def handler(event, context):\n    return None\n")
        return lam.create_function(FunctionName=name, Runtime="python3.12", Role=role, Handler="index.handler",
                                   Code={"ZipFile": code.getvalue()}, Tags=run.plan.tags(run.env))

    return run.ensure("lambda function", find, create, lambda f: f["FunctionName"])["FunctionArn"]


# --- registry and logs ---------------------------------------------------------------------------------

def _repository(run: _Run) -> None:
    ecr = run.client("ecr")
    name = run.name("backend")
    expect = run.expect("ECR-03")

    def find() -> dict[str, Any] | None:
        return _absent_on(lambda: ecr.describe_repositories(repositoryNames=[name])["repositories"][0],
                          "RepositoryNotFoundException")

    def create() -> dict[str, Any]:
        repo = ecr.create_repository(repositoryName=name, imageScanningConfiguration={"scanOnPush": True},
                                     tags=run.tag_list())["repository"]
        rules = [
            {"rulePriority": 1, "description": f"Expire untagged images after {expect['untagged_days']} days",
             "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                           "countNumber": expect["untagged_days"]}, "action": {"type": "expire"}},
            {"rulePriority": 2, "description": f"Keep the last {expect['keep_last']} images",
             "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                           "countNumber": expect["keep_last"]}, "action": {"type": "expire"}},
        ]
        ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=json.dumps({"rules": rules}))
        return repo

    run.built["repository"] = run.ensure("ecr repository", find, create, lambda r: r["repositoryName"])["repositoryUri"]


def _app_log_group(run: _Run) -> None:
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


# --- IAM -----------------------------------------------------------------------------------------------

def _role(run: _Run, purpose: str, service: str, inline_policy: str | None) -> str:
    """Inline policies only: moto has no AWS-managed policies to attach (ECS-08)."""
    iam = run.client("iam")
    name = run.name(purpose)

    def find() -> dict[str, Any] | None:
        return _absent_on(lambda: iam.get_role(RoleName=name)["Role"], "NoSuchEntity")

    def create() -> dict[str, Any]:
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=_trust(service), Tags=run.tag_list())["Role"]
        if inline_policy:
            iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=inline_policy)
        return role

    return run.ensure("iam role", find, create, lambda r: r["RoleName"])["Arn"]


def _task_roles(run: _Run) -> None:
    """The execution role pulls the image, writes logs and reads exactly this environment's secrets; the
    task role gets nothing, as the app calls no AWS API."""
    repository = run.arn("ecr", f"repository/{run.name('backend')}")
    log_group = run.arn("logs", f"log-group:{run.name('app')}:*")
    secrets_arn = run.arn("secretsmanager", f"secret:{run.plan.secret_prefix(run.env)}*")
    execution = _role(run, "task-execution", "ecs-tasks.amazonaws.com", _policy(
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Effect": "Allow", "Action": ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer",
                                       "ecr:BatchGetImage"], "Resource": repository},
        {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": log_group},
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secrets_arn},
    ))
    task = _role(run, "task", "ecs-tasks.amazonaws.com", None)
    run.built["task roles"] = {"execution": execution, "task": task}


# --- load balancer -------------------------------------------------------------------------------------

def _load_balancer(run: _Run) -> None:
    elbv2 = run.client("elbv2")
    name = run.name("alb")
    subnets = run.need("subnets")["public"]
    group = run.need("security groups")["alb"]
    bucket = run.need("log bucket")

    def find() -> dict[str, Any] | None:
        return _absent_on(lambda: elbv2.describe_load_balancers(Names=[name])["LoadBalancers"][0],
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


def _target_group(run: _Run) -> None:
    elbv2 = run.client("elbv2")
    name = run.name("app")
    expect = run.expect("ALB-04")

    def find() -> dict[str, Any] | None:
        return _absent_on(lambda: elbv2.describe_target_groups(Names=[name])["TargetGroups"][0],
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


def _certificate(run: _Run) -> None:
    acm = run.client("acm")
    common_name = run.name("alb")
    dns_name = run.need("load balancer")["DNSName"]

    def find() -> dict[str, Any] | None:
        listed = acm.list_certificates()["CertificateSummaryList"]
        return next((c for c in listed if c["DomainName"] == common_name), None)

    def create() -> dict[str, Any]:
        cert, key = _self_signed(common_name, dns_name)
        return acm.import_certificate(Certificate=cert, PrivateKey=key, Tags=run.tag_list())

    certificate = run.ensure("acm certificate", find, create, lambda c: c["CertificateArn"])
    run.built["certificate"] = certificate["CertificateArn"]


def _listeners(run: _Run) -> None:
    """HTTP only redirects (ALB-02); HTTPS terminates TLS and forwards to the app (ALB-03)."""
    elbv2 = run.client("elbv2")
    alb = run.need("load balancer")["LoadBalancerArn"]
    group = run.need("target group")["TargetGroupArn"]
    certificate = run.need("certificate")
    http, https = run.expect("ALB-02"), run.expect("ALB-03")
    present = {lst["Port"]: lst for lst in elbv2.describe_listeners(LoadBalancerArn=alb)["Listeners"]}
    redirect = {"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": http["redirect_port"],
                                                       "StatusCode": http["status_code"]}}
    specs = {
        http["port"]: {"Protocol": "HTTP", "DefaultActions": [redirect]},
        https["port"]: {"Protocol": "HTTPS", "SslPolicy": SSL_POLICY, "Certificates": [{"CertificateArn": certificate}],
                        "DefaultActions": [{"Type": "forward", "TargetGroupArn": group}]},
    }
    for port, spec in specs.items():
        def create(port: int = port, spec: dict[str, Any] = spec) -> dict[str, Any]:
            return elbv2.create_listener(LoadBalancerArn=alb, Port=port, Tags=run.tag_list(), **spec)["Listeners"][0]

        run.ensure("elbv2 listener", lambda port=port: present.get(port), create, lambda lst: lst["ListenerArn"])
    run.built["listeners"] = True


def _web_acl(run: _Run) -> None:
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


# --- ECS -----------------------------------------------------------------------------------------------

def _cluster(run: _Run) -> None:
    ecs = run.client("ecs")
    name = run.name("cluster")

    def find() -> dict[str, Any] | None:
        clusters = ecs.describe_clusters(clusters=[name])["clusters"]
        return next((c for c in clusters if c["status"] == "ACTIVE"), None)

    def create() -> dict[str, Any]:
        return ecs.create_cluster(clusterName=name, settings=[{"name": "containerInsights", "value": "enabled"}],
                                  tags=run.tag_list("key", "value"))["cluster"]

    run.built["cluster"] = run.ensure("ecs cluster", find, create, lambda c: c["clusterName"])["clusterName"]


def _container(run: _Run, tag: str = CURRENT_IMAGE_TAG) -> dict[str, Any]:
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


def _task_definition(run: _Run) -> None:
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


def _service(run: _Run) -> None:
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


def _autoscaling(run: _Run) -> None:
    """Target tracking on CPU and memory between the plan's bounds (ECS-11/12)."""
    aas = run.client("application-autoscaling")
    resource = f"service/{run.need('cluster')}/{run.need('service')}"
    dimension = "ecs:service:DesiredCount"
    bounds, targets = run.expect("ECS-11"), run.expect("ECS-12")

    def find_target() -> dict[str, Any] | None:
        return _first(aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource],
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


# --- monitoring ----------------------------------------------------------------------------------------

def _alarm_topic(run: _Run) -> None:
    """The topic every alarm notifies (MON-08), with a queue subscribed: unlike e-mail, a queue
    subscription is confirmed at once, on AWS as on the emulators."""
    sns, sqs = run.client("sns"), run.client("sqs")
    name = run.name("alarms")
    topic_arn = run.arn("sns", name)

    def find_topic() -> str | None:
        return _absent_on(lambda: sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]["TopicArn"], "NotFound")

    def create_topic() -> str:
        return sns.create_topic(Name=name, Tags=run.tag_list())["TopicArn"]

    topic = run.ensure("sns topic", find_topic, create_topic, lambda t: t)

    def find_queue() -> str | None:
        return _absent_on(lambda: sqs.get_queue_url(QueueName=name)["QueueUrl"],
                          "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")

    def create_queue() -> str:
        policy = _policy({"Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage",
                          "Resource": run.arn("sqs", name), "Condition": {"ArnEquals": {"aws:SourceArn": topic}}})
        return sqs.create_queue(QueueName=name, Attributes={"Policy": policy},
                                tags=run.plan.tags(run.env))["QueueUrl"]

    run.ensure("sqs queue", find_queue, create_queue, lambda url: url.rsplit("/", 1)[1])

    def find_subscription() -> dict[str, Any] | None:
        return _first(sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"])

    def create_subscription() -> dict[str, Any]:
        return sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=run.arn("sqs", name),
                             ReturnSubscriptionArn=True)

    run.ensure("sns subscription", find_subscription, create_subscription, lambda s: s["SubscriptionArn"])
    run.built["alarm topic"] = topic


@dataclass(frozen=True)
class _Alarm:
    suffix: str
    namespace: str
    metric: str
    dimensions: dict[str, str]
    comparison: str
    threshold: float
    period: int = 60
    periods: int = 1
    statistic: str = "Average"
    missing_data: str = "notBreaching"


def _alarms(run: _Run, alarms: list[_Alarm]) -> None:
    cw = run.client("cloudwatch")
    topic = run.need("alarm topic")
    names = [run.name(a.suffix) for a in alarms]
    present = {a["AlarmName"] for a in cw.describe_alarms(AlarmNames=names)["MetricAlarms"]}
    for alarm, name in zip(alarms, names):
        def create(alarm: _Alarm = alarm, name: str = name) -> str:
            cw.put_metric_alarm(
                AlarmName=name, Namespace=alarm.namespace, MetricName=alarm.metric,
                Dimensions=[{"Name": k, "Value": v} for k, v in alarm.dimensions.items()],
                Statistic=alarm.statistic, Period=alarm.period, EvaluationPeriods=alarm.periods,
                Threshold=alarm.threshold, ComparisonOperator=alarm.comparison,
                TreatMissingData=alarm.missing_data, AlarmActions=[topic], OKActions=[topic], Tags=run.tag_list())
            return name

        run.ensure("cloudwatch alarm", lambda name=name: name if name in present else None, create, lambda n: n)


def _balancer_dimensions(run: _Run) -> tuple[dict[str, str], dict[str, str]]:
    alb = elb_metric_id(run.need("load balancer")["LoadBalancerArn"])
    group = elb_metric_id(run.need("target group")["TargetGroupArn"])
    return {"LoadBalancer": alb}, {"TargetGroup": group, "LoadBalancer": alb}


def _load_balancer_alarms(run: _Run) -> None:
    """MON-02 (unhealthy targets), MON-05 (ELB 5xx), MON-06 (no healthy target)."""
    alb, group = _balancer_dimensions(run)
    errors, healthy = run.expect("MON-05"), run.expect("MON-06")
    _alarms(run, [
        _Alarm("ecs-unhealthy-targets", "AWS/ApplicationELB", "UnHealthyHostCount", group,
               "GreaterThanThreshold", 0.0, periods=3, statistic="Maximum"),
        _Alarm("alb-5xx", "AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", alb, "GreaterThanThreshold",
               errors["threshold"], period=errors["window_s"], statistic="Sum"),
        _Alarm("alb-no-healthy-targets", "AWS/ApplicationELB", "HealthyHostCount", group, "LessThanThreshold",
               healthy["threshold"], statistic="Minimum", missing_data="breaching"),
    ])


def _database_alarms(run: _Run) -> None:
    """MON-03 (CPU over the window), MON-04 (free storage below the ratio), MON-07 (connections)."""
    database = run.need("database")
    dims = {"DBInstanceIdentifier": database["DBInstanceIdentifier"]}
    cpu, storage = run.expect("MON-03"), run.expect("MON-04")
    free_bytes = storage["free_ratio"] * database["AllocatedStorage"] * 1024 ** 3
    _alarms(run, [
        _Alarm("rds-cpu-high", "AWS/RDS", "CPUUtilization", dims, "GreaterThanThreshold", cpu["threshold"],
               periods=cpu["window_s"] // 60),
        _Alarm("rds-free-storage-low", "AWS/RDS", "FreeStorageSpace", dims, "LessThanThreshold", free_bytes,
               period=300, statistic="Minimum"),
        _Alarm("rds-connections-high", "AWS/RDS", "DatabaseConnections", dims, "GreaterThanThreshold",
               DB_CONNECTIONS_ALARM, periods=5),
    ])


def _service_alarms(run: _Run) -> None:
    """MON-07: the service's CPU and memory."""
    dims = {"ClusterName": run.need("cluster"), "ServiceName": run.need("service")}
    _alarms(run, [
        _Alarm("ecs-cpu-high", "AWS/ECS", "CPUUtilization", dims, "GreaterThanThreshold", ECS_CPU_ALARM, periods=5),
        _Alarm("ecs-memory-high", "AWS/ECS", "MemoryUtilization", dims, "GreaterThanThreshold", ECS_MEMORY_ALARM,
               periods=5),
    ])


def _dashboard(run: _Run) -> None:
    """MON-09: one graph per part of the deployment that this endpoint offers."""
    cw = run.client("cloudwatch")
    name = run.name("overview")
    graphs: list[tuple[str, list[list[str]]]] = []
    if "service" in run.built:
        ecs = ["ClusterName", run.built["cluster"], "ServiceName", run.built["service"]]
        graphs.append(("ECS service", [["AWS/ECS", "CPUUtilization", *ecs], ["AWS/ECS", "MemoryUtilization", *ecs]]))
    if "load balancer" in run.built:
        alb = ["LoadBalancer", elb_metric_id(run.built["load balancer"]["LoadBalancerArn"])]
        graphs.append(("Load balancer", [["AWS/ApplicationELB", "RequestCount", *alb],
                                         ["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", *alb]]))
    if "database" in run.built:
        db = ["DBInstanceIdentifier", run.built["database"]["DBInstanceIdentifier"]]
        graphs.append(("Database", [["AWS/RDS", "CPUUtilization", *db], ["AWS/RDS", "DatabaseConnections", *db],
                                    ["AWS/RDS", "FreeStorageSpace", *db]]))
    body = {"widgets": [{"type": "metric", "x": 0, "y": 6 * i, "width": 24, "height": 6,
                         "properties": {"title": title, "metrics": metrics, "region": run.region, "period": 300}}
                        for i, (title, metrics) in enumerate(graphs)]}

    def find() -> str | None:
        listed = cw.list_dashboards(DashboardNamePrefix=name)["DashboardEntries"]
        return next((d["DashboardName"] for d in listed if d["DashboardName"] == name), None)

    def create() -> str:
        cw.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
        return name

    run.ensure("cloudwatch dashboard", find, create, lambda d: d)


def _trail(run: _Run) -> None:
    """MON-10: multi-region, validated, logging."""
    trail = run.client("cloudtrail")
    name = run.name("trail")
    bucket = run.need("log bucket")

    def find() -> dict[str, Any] | None:
        return _absent_on(lambda: trail.get_trail(Name=name)["Trail"], "TrailNotFoundException")

    def create() -> dict[str, Any]:
        made = trail.create_trail(Name=name, S3BucketName=bucket, S3KeyPrefix="cloudtrail", IsMultiRegionTrail=True,
                                  IncludeGlobalServiceEvents=True, EnableLogFileValidation=True,
                                  TagsList=run.tag_list())
        trail.start_logging(Name=name)
        return made

    run.ensure("cloudtrail trail", find, create, lambda t: t["Name"])


# --- the run -------------------------------------------------------------------------------------------

# In dependency order; a step whose service is missing, or that needs what a skipped step would have
# built, is recorded in the report and the next one runs.
_STEPS: tuple[tuple[str, Callable[[_Run], None]], ...] = (
    ("account", _account),
    ("network", _network),
    ("log bucket", _log_bucket),
    ("vpc flow logs", _flow_logs),
    ("security groups", _security_groups),
    ("kms key", _kms_key),
    ("database", _database),
    ("database export", _database_export),
    ("secrets", _secrets),
    ("container registry", _repository),
    ("app log group", _app_log_group),
    ("task roles", _task_roles),
    ("load balancer", _load_balancer),
    ("target group", _target_group),
    ("certificate", _certificate),
    ("listeners", _listeners),
    ("web acl", _web_acl),
    ("cluster", _cluster),
    ("task definition", _task_definition),
    ("service", _service),
    ("autoscaling", _autoscaling),
    ("alarm topic", _alarm_topic),
    ("load balancer alarms", _load_balancer_alarms),
    ("database alarms", _database_alarms),
    ("service alarms", _service_alarms),
    ("dashboard", _dashboard),
    ("cloudtrail", _trail),
)


def provision(client: Callable[[str], Any], plan: Plan, env: str) -> ProvisionReport:
    """Build (or find) the whole environment `env` of the plan at the endpoint behind `client`."""
    plan.environment(env)  # an unknown environment fails here, with the plan's own message
    run = _Run(clients=client, plan=plan, env=env, report=ProvisionReport())
    for label, step in _STEPS:
        try:
            step(run)
        except _ServiceMissing as exc:
            run.report.skipped.setdefault(exc.service, exc.reason)
        except _Blocked as exc:
            run.report.skipped[label] = f"needs the {exc}, which could not be built at this endpoint"
    return run.report
