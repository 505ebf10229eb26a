"""The app's secrets in Secrets Manager under the environment's prefix (SEC-01), the database URL among
them (DB-13), and the rotation schedule on the database secret (SEC-02)."""
from __future__ import annotations

import io
import json
import secrets
import string
import zipfile
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from harness.local.provision import iam
from harness.local.provision.context import Run, absent_on
from harness.local.provision.database import DB_MASTER_USER, DB_NAME

# Choices the plan leaves open, each a reasonable production default.
SECRET_ROTATION_DAYS = 30


def _password(length: int = 32) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _database_url(run: Run) -> str:
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


def app_secrets(run: Run) -> None:
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


def _rotate(run: Run, arn: str) -> None:
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


def _rotation_function(run: Run) -> str:
    lam = run.client("lambda")
    name = run.name("secret-rotation")

    def find() -> dict[str, Any] | None:
        return absent_on(lambda: lam.get_function(FunctionName=name)["Configuration"], "ResourceNotFoundException")

    def create() -> dict[str, Any]:
        role = iam.role(run, "secret-rotation", "lambda.amazonaws.com", None)
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("index.py", "def handler(event, context):\n    return None\n")
        return lam.create_function(FunctionName=name, Runtime="python3.12", Role=role, Handler="index.handler",
                                   Code={"ZipFile": code.getvalue()}, Tags=run.plan.tags(run.env))

    return run.ensure("lambda function", find, create, lambda f: f["FunctionName"])["FunctionArn"]
