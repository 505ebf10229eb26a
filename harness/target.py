"""Where the harness looks: the embedded emulator, a LocalStack-style endpoint, or a real AWS account.

A `Target` hands out boto3 clients that share one `CallRecorder`, so the report can say exactly how many
AWS calls a session made and how each ended. On `aws` the clients are read-only: any operation that is
not a Describe/List/Get/Lookup call is refused before it leaves the machine. The one exception is a drill's
own fault: `Target.allowing` lets the operations it names through, for the thread that holds it, while its
`with` block lasts.

`local` and `localstack` are emulators: an endpoint on AWS's own domains given to them is refused when the
`Target` is made, before any call, so no entry point (pytest, `harness snapshot`, `harness provision`) can
write to a real account through an emulator target; the read-only guard holds for every target whose
endpoint is AWS.
"""
from __future__ import annotations

import socket
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal
from urllib.parse import urlparse

import boto3
import botocore.exceptions
from botocore.config import Config
from localstack_client import config as localstack_config

TargetKind = Literal["local", "localstack", "aws"]
LOCAL_ENDPOINT = "http://127.0.0.1:4566"
READ_ONLY_PREFIXES = ("Describe", "List", "Get", "Lookup", "Head")
# AWS's own API domains (the commercial and GovCloud partitions, the dual-stack one, China's).
AWS_DOMAINS = ("amazonaws.com", "api.aws", "amazonaws.com.cn")


class TargetError(Exception):
    """The target cannot be used (unreachable, no credentials); the message is one line naming the fix."""


class ReadOnlyViolation(Exception):
    """A write call was attempted against a real AWS account."""


@dataclass
class CallRecorder:
    """Every AWS call of the session: (service, operation, outcome); outcome is 'ok' or an error code."""

    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def after_call(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        code = parsed.get("Error", {}).get("Code") if isinstance(parsed, dict) else None
        status = getattr(http_response, "status_code", 200)
        outcome = code or ("ok" if status < 400 else f"HTTP {status}")
        self.calls.append((model.service_model.service_name, model.name, outcome))

    def after_call_error(self, exception: Exception, event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        self.calls.append((service, operation, type(exception).__name__))

    def mark(self) -> int:
        return len(self.calls)

    def since(self, mark: int) -> list[tuple[str, str, str]]:
        return self.calls[mark:]

    def summary(self, mark: int = 0) -> dict[str, int]:
        return dict(Counter(f"{s}.{op}" for s, op, _ in self.since(mark)))


def is_aws_endpoint(url: str | None) -> bool:
    """True when `url` is on one of AWS's own domains (a host equal to one of AWS_DOMAINS or under it), in
    any case, with any scheme or port, with or without a scheme."""
    if not url:
        return False
    host = urlparse(url if "//" in url else f"//{url}").hostname or ""
    host = host.lower().rstrip(".")
    return any(host == domain or host.endswith("." + domain) for domain in AWS_DOMAINS)


def refuse_aws_endpoint(kind: str, url: str | None) -> None:
    """An emulator target (`local`, `localstack`) pointed at AWS itself is a usage error: one line, the fix."""
    if kind != "aws" and is_aws_endpoint(url):
        raise TargetError(f"--endpoint-url {url} is AWS itself, not an emulator (the {kind} target is for "
                          f"emulators only); to check a real account use --target aws, which is read-only and "
                          f"never provisioned")


@dataclass
class Target:
    kind: TargetKind
    region: str
    endpoint_url: str | None = None
    profile: str | None = None
    recorder: CallRecorder = field(default_factory=CallRecorder)
    _session: Any = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    # Per thread, so a probe polling from another thread while a drill injects its fault stays read-only.
    _allowed: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    def __post_init__(self) -> None:
        refuse_aws_endpoint(self.kind, self.endpoint_url)

    @property
    def on_aws(self) -> bool:
        """The read-only guard's condition: a real account, or an endpoint on AWS's domains."""
        return self.kind == "aws" or is_aws_endpoint(self.endpoint_url)

    @property
    def session(self) -> boto3.Session:
        if self._session is None:
            try:
                if self.kind == "aws" or self.profile:
                    # On an emulator a profile is for one that enforces IAM (LocalStack's, moto's auth).
                    self._session = boto3.Session(profile_name=self.profile, region_name=self.region)
                else:
                    # Emulators accept any key; fixed ones keep a stray real credential from ever being sent.
                    self._session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test",
                                                  region_name=self.region)
            except botocore.exceptions.ProfileNotFound as exc:
                name = exc.kwargs.get("profile", self.profile)  # AWS_PROFILE names it when --profile does not
                raise TargetError(f"AWS profile '{name}' is not configured; "
                                  f"run 'aws configure --profile {name}' or pass another --profile") from None
        return self._session

    def client(self, service: str) -> Any:
        if service not in self._clients:
            config = Config(retries={"mode": "adaptive", "max_attempts": 5 if self.kind == "aws" else 3},
                            connect_timeout=5 if self.kind == "aws" else 2,
                            read_timeout=60 if self.kind == "aws" else 20)
            client = self.session.client(service, endpoint_url=self.endpoint_url, config=config)
            events = client.meta.events
            events.register("after-call", self.recorder.after_call)
            events.register("after-call-error", self.recorder.after_call_error)
            if self.on_aws:
                events.register_first("before-call", self._refuse_writes)
            self._clients[service] = client
        return self._clients[service]

    def _refuse_writes(self, model: Any, **_: Any) -> None:
        allowed = getattr(self._allowed, "operations", frozenset())
        if model.name not in allowed and not model.name.startswith(READ_ONLY_PREFIXES):
            raise ReadOnlyViolation(f"{model.service_model.service_name}.{model.name} is a write call; "
                                    f"the harness is read-only on --target aws")

    @contextmanager
    def allowing(self, *operations: str) -> Iterator[None]:
        """Let exactly these write operations (API names: "RebootDBInstance") through the read-only guard,
        from this thread, until the block ends: a drill's fault is the only write the harness makes on AWS.
        The calls are recorded like any other."""
        before = getattr(self._allowed, "operations", frozenset())
        self._allowed.operations = before | frozenset(operations)
        try:
            yield
        finally:
            self._allowed.operations = before

    def describe(self) -> str:
        where = self.endpoint_url or f"AWS {self.region}" + (f" (profile {self.profile})" if self.profile else "")
        return f"{self.kind}: {where}"

    def check_reachable(self) -> None:
        """Fail fast, with the fix, when the endpoint does not answer or there are no credentials."""
        if self.endpoint_url:
            url = urlparse(self.endpoint_url)
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                with socket.create_connection((url.hostname or "127.0.0.1", port), timeout=3):
                    pass
            except OSError as exc:
                hint = ("start LocalStack there or pass the right --endpoint-url" if self.kind == "localstack"
                        else "start the emulator or pass the right --endpoint-url")
                raise TargetError(f"cannot reach {self.endpoint_url} ({exc.strerror or exc}); {hint}") from None
        try:
            self.client("sts").get_caller_identity()
        except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError):
            raise TargetError("no AWS credentials found; pass --profile, or set AWS_PROFILE or "
                              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from None
        except botocore.exceptions.ClientError as exc:
            err = exc.response.get("Error", {})
            raise TargetError(f"{self.describe()} refused sts:GetCallerIdentity ({err.get('Code')}: "
                              f"{err.get('Message')}); check the credentials") from None
        except botocore.exceptions.EndpointConnectionError as exc:
            raise TargetError(f"cannot reach {exc.kwargs.get('endpoint_url', self.describe())}; "
                              f"check --region and the network") from None


def is_unavailable(exc: BaseException) -> bool:
    """True when the endpoint does not offer the service or operation at all (LocalStack community
    answers 501 InternalFailure), as opposed to refusing or failing one request."""
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 501:
        return True
    error = exc.response.get("Error", {})
    if error.get("Code") in ("NotImplemented", "NotImplementedException"):
        return True
    message = str(error.get("Message", "")).lower()
    return error.get("Code") == "InternalFailure" and ("not yet implemented" in message or "pro feature" in message)


def default_endpoint(kind: TargetKind) -> str | None:
    """Where a target's AWS APIs are when no --endpoint-url is given. `localstack` looks where LocalStack's
    own clients do (localstack-client's conventions: AWS_ENDPOINT_URL, else LOCALSTACK_HOST as host[:port],
    https when USE_SSL is set, else http://localhost:4566), so a shell set up for LocalStack needs no option;
    `local` is the embedded emulator the harness starts itself; `aws` is boto3's own resolution."""
    if kind == "aws":
        return None
    return localstack_config.get_service_endpoint("sts") if kind == "localstack" else LOCAL_ENDPOINT


def endpoint_listening(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 80), timeout=1):
            return True
    except OSError:
        return False
