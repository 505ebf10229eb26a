"""Helpers for the harness's own tests: run a suite the way a user does, and read what it reported."""
from __future__ import annotations

import http.cookiejar
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import boto3
import botocore.exceptions
import moto
import pytest
import requests
from moto.server import ThreadedMotoServer
from harness.util.net import free_port
from support.zygote import Zygote

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden-prod.json"


@dataclass
class SuiteRun:
    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any] | None

    def status(self, rid: str) -> str | None:
        for row in (self.summary or {}).get("requirements", []):
            if row["id"] == rid:
                return row["status"]
        return None

    def message(self, rid: str) -> str:
        return next((r["message"] for r in (self.summary or {}).get("requirements", []) if r["id"] == rid), "")

    def ids_with(self, *statuses: str) -> set[str]:
        return {r["id"] for r in (self.summary or {}).get("requirements", []) if r["status"] in statuses}

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("ERROR:")]


def run_suite(*args: str, reports: Path, suite: str = "compliance", env: dict[str, str | None] | None = None,
              timeout: float = 300) -> SuiteRun:
    """`pytest <suite> ARGS` as a process of its own from the project root (forked from a warm one, see
    support/zygote.py), its summary read from `reports`; `env` adds variables to the environment, or removes
    those it maps to None."""
    environ = {**os.environ, **(env or {})}
    environ.pop("PYTEST_XDIST_WORKER", None)
    environ.pop("PYTEST_CURRENT_TEST", None)
    cmd = [suite, "-q", "-p", "no:cacheprovider", "--reports-dir", str(reports), *args]
    returncode, stdout, stderr = SUITES.run(cmd, ROOT, {k: v for k, v in environ.items() if v is not None}, timeout)
    path = reports / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else None
    return SuiteRun(returncode, stdout, stderr, summary)


SUITES = Zygote()


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    return tmp_path / "reports"


def wait_for(condition: Callable[[], Any], timeout: float, what: Callable[[], str], poll_s: float = 0.1) -> float:
    """Seconds until `condition` held; fails with `what()` past `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout:.0f} s: {what()}")
        time.sleep(poll_s)
    return time.monotonic() - start


class HttpLoop:
    """`threads` clients GETting `url` (through the stand-in's HAProxy, trusting `ca`), each at most `rate_hz`
    a second, without cookies, so any request may go to any task in service. Every request is kept in
    `answers` as (epoch sent, status or 0 without an answer, task, version); every failure as a line in
    `errors`. Stopped, and its threads joined, on leaving the `with`."""

    def __init__(self, url: str, ca: str, rate_hz: float, threads: int = 1, timeout_s: float = 5.0) -> None:
        self.url, self.ca, self.rate_hz, self.timeout_s = url, ca, rate_hz, timeout_s
        self.stop = threading.Event()
        self.started = time.time()
        self.answers: list[tuple[float, int, str, str]] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Any:
        self.started = time.time()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    @property
    def done(self) -> int:
        return sum(1 for answer in self.answers if answer[1])

    def _client(self) -> None:
        with requests.Session() as session:
            session.verify, session.trust_env = self.ca, False
            session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            while not self.stop.is_set():
                started = time.time()
                try:
                    response = session.get(self.url, timeout=self.timeout_s)
                    self.answers.append((started, response.status_code, response.headers.get("X-Task-Id", ""),
                                         response.headers.get("X-App-Version", "")))
                    if response.status_code != 200:
                        self.errors.append(f"{response.status_code} from {response.headers.get('X-Task-Id')}")
                except requests.RequestException as exc:
                    self.answers.append((started, 0, "", ""))
                    self.errors.append(repr(exc))
                self.stop.wait(max(0.0, 1 / self.rate_hz - (time.time() - started)))


@contextmanager
def stand_in(prefix: str, env: str, port_offset: int, time_scale: float = 1.0) -> Iterator[Any]:
    """A stand-in of the plan's `env` of its own (harness.local.stand_in.StandIn), its ports shifted by
    `port_offset`, brought up and afterwards down, by PID. Under /tmp, not pytest's tmp_path: PostgreSQL
    runs as its own user and needs traversable parents and a short path (socket names)."""
    from harness.local.stand_in import StandIn, Ports

    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    plane = StandIn(root, ROOT / "plan" / "dougust.toml", env, f"http://127.0.0.1:{free_port()}",
                      Ports().offset(port_offset), time_scale=time_scale)
    try:
        assert plane.up() is True
        yield plane
    finally:
        plane.down()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def pair_in_tmp(prefix: str, password: str) -> Iterator[Any]:
    """A started PostgreSQL pair (harness.local.postgres.PostgresPair) on two free ports under /tmp, stopped
    (its restores too) and removed afterwards; asserts that nothing of it still runs. Not pytest's tmp_path:
    its parents are 0700 root, which the `postgres` user cannot traverse; and short, as restores keep their
    unix sockets under it."""
    from harness.local.postgres import DatabaseConfig, PostgresPair

    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    primary_port = free_port()
    standby_port = free_port()
    while standby_port == primary_port:
        standby_port = free_port()
    pair = PostgresPair(DatabaseConfig(root=root, password=password, primary_port=primary_port,
                                       standby_port=standby_port))
    try:
        pair.start()
        yield pair
    finally:
        swept = pair.sweep_restores(float("inf"))
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not any(node["running"] for node in pair.status().values())
        assert all(entry["removed"] for entry in swept), swept


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server in this process for one test module. moto keeps its state per process and account,
    so a module that shares the process with another uses an account of its own or a distinct env."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per call would bury failures
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


# --- a moto server that enforces IAM -----------------------------------------------------------------------

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
        command = [sys.executable, __file__, str(port)]
    else:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_CALLS)}
    server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port, server)
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
        server.terminate()
        server.wait(timeout=10)


def _wait_for(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "moto server did not start"
            time.sleep(0.1)


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
    moto/core/authorization.py, moto/iam/access_control.py, moto/s3/responses.py); run as this file's main.
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
