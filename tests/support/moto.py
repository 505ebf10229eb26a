"""moto's server as the self-tests need it: one that enforces IAM as AWS does (this file run as a program
serves it with its corrections)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import moto

from harness.util import proc
from harness.util.net import accepts, free_port
from harness.util.wait import until
from support.suites import ROOT, SuiteRun, run_suite


ALLOW_ALL = {"Effect": "Allow", "Action": "*", "Resource": "*"}


def policy_document(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


@dataclass
class IamServer:
    endpoint: str
    credentials: Path
    admin_iam: Any

    @property
    def env(self) -> dict[str, str]:
        """Environment for a process that picks its user by --profile from this server's credentials file."""
        return {"AWS_SHARED_CREDENTIALS_FILE": str(self.credentials), "AWS_CONFIG_FILE": "/nonexistent"}

    def grant(self, user: str, policy: dict[str, Any]) -> None:
        """Replace the user's one inline policy; moto evaluates it again on every request."""
        self.admin_iam.put_user_policy(UserName=user, PolicyName="harness", PolicyDocument=json.dumps(policy))

    def run(self, user: str, tmp: Path, *extra: str, environment: str = "dev") -> SuiteRun:
        """The compliance suite against this server as `user`, its reports under tmp/user."""
        return run_suite("--target", "localstack", "--endpoint-url", self.endpoint, "--profile", user,
                         "--env", environment, *extra, reports=tmp / user, env=self.env)


# create_user, put_user_policy and create_access_key for the first user; after them the server enforces IAM.
BOOTSTRAP_CALLS = 3


@contextmanager
def iam_enforcing_server(users: Mapping[str, dict[str, Any]], directory: Path, *,
                         as_aws_authorizes: bool = False) -> Iterator[IamServer]:
    """A moto server on 127.0.0.1 that enforces IAM after its first few calls (`INITIAL_NO_AUTH_ACTION_COUNT`),
    with one user per entry of `users`, each given that inline policy and an access key; the keys are written
    as one profile per user to a credentials file in `directory`. The first user creates the others and makes
    every later grant, so its policy must allow IAM. `as_aws_authorizes` starts the server with the
    corrections of `_serve_as_aws_authorizes`."""
    port = free_port()
    if as_aws_authorizes:
        command = [sys.executable, "-m", "support.moto", str(port)]
    else:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_CALLS)}
    # Bound to the test process (harness.util.proc): a test run that is killed leaves no server behind.
    server = proc.spawn(command, env=env, cwd=ROOT / "tests", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until(lambda: accepts(port, timeout_s=0.5) or server.poll() is not None, 30, "moto server to start")
        assert server.poll() is None, "moto server did not start"
        endpoint = f"http://127.0.0.1:{port}"
        (admin, admin_policy), *others = users.items()
        bootstrap = _iam(endpoint, ("bootstrap", "bootstrap"))
        keys = {admin: _create_user(bootstrap, admin, admin_policy)}
        admin_iam = _iam(endpoint, keys[admin])
        if as_aws_authorizes:
            missing = corrections_missing(endpoint, keys[admin])
            assert not missing, (f"moto {moto.__version__}: the IAM-enforcing server no longer authorizes as AWS "
                                 f"does; its corrections (tests/conftest.py, _serve_as_aws_authorizes) need "
                                 f"updating for this version: " + "; ".join(missing))
        keys.update({user: _create_user(admin_iam, user, policy) for user, policy in others})
        credentials = directory / "credentials"
        credentials.write_text("".join(f"[{user}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
                                       for user, (key, secret) in keys.items()))
        yield IamServer(endpoint, credentials, admin_iam)
    finally:
        proc.stop(server, timeout_s=10)


def _iam(endpoint: str, key: tuple[str, str]) -> Any:
    return boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key[0], aws_secret_access_key=key[1])


def _create_user(iam: Any, name: str, policy: dict[str, Any]) -> tuple[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="harness", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def corrections_missing(endpoint: str, admin_key: tuple[str, str]) -> list[str]:
    """Each correction of `_serve_as_aws_authorizes` that the server at `endpoint` does not apply, one line
    each: a canary user allowed exactly what AWS checks for one call makes that call, and a denial means the
    server names the action or resource otherwise. The admin (`admin_key`) creates what the calls need and
    removes it all afterwards."""
    session = boto3.Session(aws_access_key_id=admin_key[0], aws_secret_access_key=admin_key[1],
                            region_name="us-east-1")
    admin_iam = session.client("iam", endpoint_url=endpoint)
    bucket, secret_name = "harness-canary-bucket", "harness-canary/secret"
    session.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    secrets = session.client("secretsmanager", endpoint_url=endpoint)
    secret_arn = secrets.create_secret(Name=secret_name, SecretString="canary")["ARN"]
    cases: list[tuple[str, dict[str, Any], str, str, dict[str, Any]]] = [
        ("CloudWatch is authorized by IAM's prefix cloudwatch",
         {"Action": "cloudwatch:DescribeAlarms", "Resource": "*"}, "cloudwatch", "describe_alarms", {}),
        ("the tagging API is authorized by IAM's prefix tag",
         {"Action": "tag:GetResources", "Resource": "*"}, "resourcegroupstaggingapi", "get_resources", {}),
        ("S3's HeadBucket is authorized as s3:ListBucket",
         {"Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}, "s3", "head_bucket", {"Bucket": bucket}),
        ("S3's ListObjects is authorized as s3:ListBucket",
         {"Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}, "s3", "list_objects",
         {"Bucket": bucket}),
        ("Secrets Manager is authorized against the secret's ARN",
         {"Action": "secretsmanager:DescribeSecret", "Resource": secret_arn}, "secretsmanager", "describe_secret",
         {"SecretId": secret_name}),
    ]
    missing = []
    try:
        for n, (correction, statement, service, operation, params) in enumerate(cases):
            user = f"harness-canary-{n}"
            key = _create_user(admin_iam, user, policy_document({"Effect": "Allow", **statement}))
            client = boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                                  aws_access_key_id=key[0], aws_secret_access_key=key[1])
            try:
                getattr(client, operation)(**params)
            except botocore.exceptions.ClientError as e:
                missing.append(f"{correction}, but {service}.{operation} allowed {statement['Action']} was denied "
                               f"({e.response['Error'].get('Code')})")
            finally:
                admin_iam.delete_access_key(UserName=user, AccessKeyId=key[0])
                admin_iam.delete_user_policy(UserName=user, PolicyName="harness")
                admin_iam.delete_user(UserName=user)
    finally:
        session.client("s3", endpoint_url=endpoint).delete_bucket(Bucket=bucket)
        secrets.delete_secret(SecretId=secret_name, ForceDeleteWithoutRecovery=True)
    return missing


def _serve_as_aws_authorizes(port: int) -> None:
    """moto's server with its corrections so that it authorizes as AWS does (moto 5.2.6: moto/core/responses.py,
    moto/core/authorization.py, moto/iam/access_control.py, moto/s3/responses.py); `python -m support.moto PORT`.
    `corrections_missing` proves each of them on every start, so a moto release that changes what they
    correct fails there, naming the version and the correction, instead of in the tests that rely on them.

    - CloudWatch: moto names the action by the request's signing name, `monitoring:DescribeAlarms`; IAM's
      prefix for CloudWatch is `cloudwatch`, so a correct policy would be denied.
    - Resource Groups Tagging API: likewise `tagging:GetResources` for IAM's `tag:GetResources`.
    - S3: since moto 5.2.6 the action checked is the API operation (`s3:HeadBucket`, `s3:ListObjects`), not
      the IAM action S3's handler still records in the request's data from its ACTION_MAP (`s3:ListBucket`
      for both); this server checks the recorded one. ACTION_MAP itself names a HEAD on a bucket
      `HeadBucket`, an action IAM does not have; AWS checks `s3:ListBucket`.
    - Secrets Manager: moto checks every action against the resource "*" (only SQS, IAM and STS name one), so
      a policy scoped to one secret's ARN would deny everything; this server names the secret's ARN, as AWS
      does.
    """
    from moto.iam.access_control import IAMRequestBase
    from moto.s3.responses import ACTION_MAP
    from moto.secretsmanager.responses import SecretsManagerResponse
    from moto.server import main

    signed_as = IAMRequestBase.__init__

    def named_as_iam_names_it(self: Any, *args: Any, **kwargs: Any) -> None:
        signed_as(self, *args, **kwargs)
        prefix = {"monitoring": "cloudwatch", "tagging": "tag"}.get(self._service)
        if prefix:
            self._action = f"{prefix}:" + self._action.split(":", 1)[1]
        recorded = self._data.get("Action") if self._service == "s3" and isinstance(self._data, dict) else None
        if isinstance(recorded, str):
            self._action = f"s3:{recorded}"

    def secret_arn(self: Any) -> str:
        secret_id = self._get_param("SecretId")
        secret = self.backend.secrets.get(secret_id) if secret_id else None
        return secret.arn if secret else "*"

    IAMRequestBase.__init__ = named_as_iam_names_it
    ACTION_MAP["BUCKET"]["HEAD"]["DEFAULT"] = "ListBucket"
    SecretsManagerResponse._determine_resource = secret_arn
    main(["-H", "127.0.0.1", "-p", str(port)])


if __name__ == "__main__":
    _serve_as_aws_authorizes(int(sys.argv[1]))
