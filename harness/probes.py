"""HTTP and TLS probes through the load balancer: what the smoke gate sees, kept as a timeline.

Probes fetch and record; they never judge (harness/smoke.py does). Every request is bounded by a
timeout, an answer that never comes is recorded as an error, and token values in bodies are redacted
before anything is kept. Nothing is retried: each request is one observation, and re-checking is the
gate's business (--deadline), so a flaky load balancer shows up instead of being papered over.
"""
from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from harness.redact import MASK

# One attempt per request; read=False lets a read timeout surface as itself rather than as a retry error.
NO_RETRY = Retry(total=0, read=False, redirect=False)
SECRET_KEYS = {"accessToken", "refreshToken", "password", "token"}


@dataclass
class Exchange:
    """One request and what came back (or the error instead)."""

    name: str
    method: str
    url: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    elapsed_ms: float = 0.0
    error: str | None = None
    at: float = 0.0
    raw: Any = field(default=None, repr=False)  # the unredacted body, for the next step; never reported

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    def cookie(self, name: str) -> str | None:
        """The value this response set for cookie `name`."""
        jar = SimpleCookie()
        try:
            jar.load(self.header("set-cookie") or "")
        except CookieError:
            return None
        return jar[name].value if name in jar else None

    def evidence(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "raw" and v not in (None, {}, "")}


@dataclass
class TlsReport:
    host: str
    port: int
    verified: bool = False
    error: str | None = None
    protocol: str | None = None
    not_after: str | None = None
    subject_names: list[str] = field(default_factory=list)


@dataclass
class Observations:
    """One round of probing; `exchanges` holds every response of the round, in order."""

    base_url: str = ""
    exchanges: list[Exchange] = field(default_factory=list)
    tls: TlsReport | None = None
    started: float = 0.0
    broken: dict[str, str] = field(default_factory=dict)  # check id -> why its step could not be observed
    forgery: str | None = None  # how the forged token was made from the real one

    def named(self, name: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.name == name]

    def first(self, name: str) -> Exchange | None:
        found = self.named(name)
        return found[0] if found else None


def _redact(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: MASK if k in SECRET_KEYS else _redact(v) for k, v in body.items()}
    if isinstance(body, list):
        return [_redact(v) for v in body]
    return body


@dataclass(frozen=True)
class Endpoint:
    """Where the gate looks: the HTTPS base URL, the plain-HTTP URL of the same host, the CA to trust."""

    base_url: str
    http_url: str
    ca_bundle: str | None = None
    timeout_s: float = 5.0

    @classmethod
    def of(cls, base_url: str, http_url: str | None = None, ca_bundle: str | None = None) -> Endpoint:
        parts = urlsplit(base_url.rstrip("/"))
        default_http = urlunsplit(("http", parts.hostname or "", parts.path, "", ""))
        return cls(base_url.rstrip("/"), (http_url or default_http).rstrip("/"), ca_bundle)


class _TrustAdapter(HTTPAdapter):
    """Verifies the certificate chain against the given CA but not the host name: a certificate for the
    wrong host is the TLS check's finding (SMK-03), and must not turn every other check into an error."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__(max_retries=NO_RETRY)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, ssl_context=self._context, assert_hostname=False, **kwargs)


class Probe:
    """The HTTP client of the app's checks: one requests session, no retries, no redirects followed, and
    only the cookies each caller passes."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        context = ssl.create_default_context(cafile=endpoint.ca_bundle) if endpoint.ca_bundle \
            else ssl.create_default_context()
        context.check_hostname = False
        self.session = requests.Session()
        self.session.mount("https://", _TrustAdapter(context))
        self.session.mount("http://", HTTPAdapter(max_retries=NO_RETRY))

    def close(self) -> None:
        self.session.close()

    def request(self, obs: Observations, name: str, method: str, url: str, **kwargs: Any) -> Exchange:
        exchange = Exchange(name, method, url, at=round(time.monotonic() - obs.started, 3))
        self.session.cookies.clear()  # each request carries only the cookies its caller gives it
        start = time.perf_counter()
        try:
            # verify per request: a session's own would lose to REQUESTS_CA_BUNDLE where that is set.
            response = self.session.request(method, url, timeout=self.endpoint.timeout_s, allow_redirects=False,
                                            verify=self.endpoint.ca_bundle or True, **kwargs)
            exchange.status = response.status_code
            exchange.headers = dict(response.headers)
            try:
                exchange.raw = response.json()
                exchange.body = _redact(exchange.raw)
            except ValueError:  # not JSON, or not text at all
                exchange.body = response.text[:300]
        except requests.RequestException as exc:
            exchange.error = _one_line(exc)
        except OSError as exc:  # e.g. a REQUESTS_CA_BUNDLE that names no file: this request's failure
            exchange.error = f"{type(exc).__name__}: {exc}"
        exchange.elapsed_ms = round((time.perf_counter() - start) * 1000, 2)
        obs.exchanges.append(exchange)
        return exchange

    def get(self, obs: Observations, name: str, path: str, **kwargs: Any) -> Exchange:
        return self.request(obs, name, "GET", self.endpoint.base_url + path, **kwargs)


def _one_line(exc: requests.RequestException) -> str:
    """requests wraps the cause in layers of pool messages; the innermost reason is what a reader needs."""
    reason: BaseException = exc
    while reason.args and isinstance(reason.args[0], BaseException):
        reason = reason.args[0]
    reason = getattr(reason, "reason", None) or reason
    return f"{type(exc).__name__}: {reason}"


def tls_report(endpoint: Endpoint) -> TlsReport:
    """Handshake with full verification (chain and host name), and the certificate's facts either way."""
    parts = urlsplit(endpoint.base_url)
    host, port = parts.hostname or "localhost", parts.port or 443
    report = TlsReport(host, port)
    context = ssl.create_default_context(cafile=endpoint.ca_bundle) if endpoint.ca_bundle \
        else ssl.create_default_context()
    try:
        with socket.create_connection((host, port), timeout=endpoint.timeout_s) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            report.verified = True
            report.protocol = tls.version()
    except ssl.SSLCertVerificationError as exc:
        report.error = exc.verify_message or str(exc)
    except (OSError, ssl.SSLError) as exc:
        report.error = f"{type(exc).__name__}: {exc}"
    _certificate_facts(report, endpoint)
    return report


def _certificate_facts(report: TlsReport, endpoint: Endpoint) -> None:
    """Expiry, names and protocol, read without verification so a bad certificate can still be described."""
    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((report.host, report.port), timeout=endpoint.timeout_s) as raw, \
                context.wrap_socket(raw, server_hostname=report.host) as tls:
            der = tls.getpeercert(binary_form=True)
            report.protocol = report.protocol or tls.version()
    except (OSError, ssl.SSLError):
        return
    if der:
        cert = x509.load_der_x509_certificate(der)
        report.not_after = cert.not_valid_after_utc.isoformat()
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            report.subject_names = [str(n) for n in san.get_values_for_type(x509.DNSName)] + \
                                   [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            report.subject_names = []


def days_left(not_after: str, now: dt.datetime | None = None) -> float:
    moment = now or dt.datetime.now(dt.timezone.utc)
    return (dt.datetime.fromisoformat(not_after) - moment).total_seconds() / 86400
