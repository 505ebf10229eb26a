"""HTTP and TLS probes through the load balancer: what the smoke gate sees, kept as a timeline; and the
drills' probe loops (health and canary writes through the load balancer, canary inserts straight to the
database), which sample at a fixed rate into a Timeline.

Probes fetch and record; they never judge (harness/smoke/gate.py does). Every request is bounded by a
timeout, an answer that never comes is recorded as an error, and token values in bodies are redacted
before anything is kept. Nothing is retried: each request is one observation, and re-checking is the
gate's business (--deadline), so a flaky load balancer shows up instead of being papered over.
"""
from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from harness.smoke.tasks import ServiceTasks
from harness.util.redact import MASK

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
    tasks: ServiceTasks | None = None  # SMK-10: the service's deployment and its stopped tasks

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


# -- drill probes: loops that keep a timeline of samples and canary writes ---------------------------------


class Timeline:
    """What a drill's probes saw: samples and canary writes, appended by the probe threads."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.samples: list[Any] = []
        self.writes: list[Any] = []
        self._lock = threading.Lock()

    def add(self, sample: Any, write: Any = None) -> None:
        with self._lock:
            self.samples.append(sample)
            if write is not None:
                self.writes.append(write)

    def copy(self) -> tuple[list[Any], list[Any]]:
        with self._lock:
            return list(self.samples), list(self.writes)


class ProbeLoop(threading.Thread):
    """Runs `step(t)` every interval_s on a fixed schedule (a late step is followed at once by the next,
    never by a burst) until stopped. `step` returns (ok, latency_ms, detail, write-or-None) and never raises:
    an exception is that sample's failure, one line. Steps are numbered from `first_seq` (`seq`: the next
    one's), so a loop started again for the same run goes on where the last one stopped."""

    def __init__(self, name: str, interval_s: float, step: Callable[[float, int], tuple], timeline: Timeline,
                 first_seq: int = 0) -> None:
        super().__init__(name=f"probe-{name}", daemon=True)
        self.probe, self.interval_s, self.step, self.timeline = name, interval_s, step, timeline
        self.seq = first_seq
        self.stopping = threading.Event()

    def run(self) -> None:
        from harness.drills.model import Sample

        clock = self.timeline.clock
        due = clock.now()
        while not self.stopping.is_set():
            t = clock.now()
            started = time.perf_counter()
            try:
                ok, latency_ms, detail, write = self.step(t, self.seq)
            except Exception as exc:  # noqa: BLE001 - a probe that broke is a failed sample, not a dead thread
                ok, latency_ms, detail, write = False, None, f"{type(exc).__name__}: {exc}"[:200], None
            if latency_ms is None and ok:
                latency_ms = round((time.perf_counter() - started) * 1000, 2)
            self.timeline.add(Sample(round(t, 3), self.probe, ok, latency_ms, detail), write)
            self.seq += 1
            due = max(due + self.interval_s, clock.now())
            self.stopping.wait(max(0.0, due - clock.now()))

    def stop(self) -> None:
        self.stopping.set()


@dataclass(frozen=True)
class Canary:
    """Where canary writes go through the API, from the plan's [drills.canary]: the tenant-scoped resource's
    path, a body template ({run}, {seq}, {sent_at} filled in), the path that reads one back ({id}) and the
    field of the answer that holds its id."""
    path: str = "/api/notes"
    body: dict[str, str] = field(default_factory=lambda: {"title": "dr canary {run} #{seq}", "body": "{sent_at}"})
    read: str = "/api/notes/{id}"
    id_field: str = "id"
    login: str = "/api/auth/login"


class ApiProbes:
    """Health and canary writes through the load balancer, each thread with its own session."""

    def __init__(self, endpoint: Endpoint, account: tuple[str, str] | None, canary: Canary, run_id: str,
                 timeout_s: float = 2.0) -> None:
        self.endpoint, self.account, self.canary, self.run_id = endpoint, account, canary, run_id
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "probe"):
            self._local.probe = Probe(self.endpoint)
            self._local.token = None
        return self._local.probe.session

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self._session().request(method, self.endpoint.base_url + path, timeout=self.timeout_s,
                                       allow_redirects=False, verify=self.endpoint.ca_bundle or True, **kwargs)

    def health(self, t: float, seq: int) -> tuple:
        try:
            response = self._call("GET", "/api/health")
        except requests.RequestException as exc:
            return False, None, _one_line(exc), None
        return response.status_code == 200, round(response.elapsed.total_seconds() * 1000, 2), \
            str(response.status_code), None

    def _token(self, fresh: bool = False) -> str:
        self._session()
        if self._local.token is None or fresh:
            if self.account is None:
                raise RuntimeError("no account for canary writes (the smoke account's secret could not be read)")
            response = self._call("POST", self.canary.login, json={"email": self.account[0],
                                                                   "password": self.account[1]})
            if response.status_code not in (200, 201):
                raise RuntimeError(f"login answered {response.status_code}")
            self._local.token = response.json()["accessToken"]
        return self._local.token

    def write(self, t: float, seq: int) -> tuple:
        """One canary write; acknowledged only on a 2xx that names the new resource's id."""
        from harness.drills.model import Write

        write = Write("write", seq, round(t, 3), False)
        sent_at = dt.datetime.now(dt.timezone.utc).isoformat()
        body = {k: v.format(run=self.run_id, seq=seq, sent_at=sent_at) for k, v in self.canary.body.items()}
        try:
            token = self._token()
            response = self._call("POST", self.canary.path, json=body, headers={"Authorization": f"Bearer {token}"})
            if response.status_code == 401:  # expired: log in again, and this sample counts the retry
                response = self._call("POST", self.canary.path, json=body,
                                      headers={"Authorization": f"Bearer {self._token(fresh=True)}"})
        except (requests.RequestException, RuntimeError, ValueError, KeyError) as exc:
            detail = _one_line(exc) if isinstance(exc, requests.RequestException) else f"{exc}"[:200]
            return False, None, detail, write
        latency = round(response.elapsed.total_seconds() * 1000, 2)
        if 200 <= response.status_code < 300:
            try:
                write.key = str(response.json()[self.canary.id_field])
                write.acknowledged = True
            except (ValueError, KeyError, TypeError):
                return False, latency, f"{response.status_code} without the '{self.canary.id_field}' field", write
        return write.acknowledged, latency, str(response.status_code), write

    def read_back(self, writes: list[Any], attempts: int = 3) -> tuple[set[tuple[str, int]], str | None]:
        """Which acknowledged API writes are still there: (present, problem). A write whose read answers
        neither 200 nor 404 after a few attempts makes the read-back a problem (we could not tell)."""
        present: set[tuple[str, int]] = set()
        for write in writes:
            if write.probe != "write" or not write.acknowledged:
                continue
            status: Any = None
            for _ in range(attempts):
                try:
                    response = self._call("GET", self.canary.read.format(id=write.key),
                                          headers={"Authorization": f"Bearer {self._token()}"})
                    if response.status_code == 401:
                        self._token(fresh=True)
                        continue
                    status = response.status_code
                except (requests.RequestException, RuntimeError, ValueError, KeyError) as exc:
                    status = f"{exc}"[:200]
                if status in (200, 404):
                    break
                time.sleep(0.5)
            if status == 200:
                present.add(("write", write.seq))
            elif status != 404:
                return present, f"canary write #{write.seq} could not be read back: {status}"
        return present, None


CANARY_TABLE = "harness_drill_canary"


class DatabaseProbe:
    """Canary inserts straight to the database (the stand-in's multi-host DSN, or --db-url inside the VPC):
    one row per tick with the run id, a sequence number and the database's own timestamp (the clock a restore
    point is read from), committed in autocommit. A failed insert drops the connection; the next tick
    connects again, to whichever node takes writes. A connection that went silent (a node lost with its
    network) fails within seconds, by TCP keepalives, a TCP user timeout and a statement timeout, rather
    than holding the probe."""

    def __init__(self, dsn: str, run_id: str, connect_timeout_s: int = 2) -> None:
        self.dsn, self.run_id, self.connect_timeout_s = dsn, run_id, connect_timeout_s
        self._conn: Any = None

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout_s,
                                         keepalives=1, keepalives_idle=1, keepalives_interval=1,
                                         keepalives_count=2, tcp_user_timeout=3000,
                                         options="-c statement_timeout=3000")
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS {CANARY_TABLE} (run_id text, seq integer, "
                               "client_at timestamptz, PRIMARY KEY (run_id, seq))")
        return self._conn

    def insert(self, t: float, seq: int) -> tuple:
        import psycopg

        from harness.drills.model import Write

        write = Write("db", seq, round(t, 3), False, key=str(seq))
        started = time.perf_counter()
        try:
            self._connection().execute(f"INSERT INTO {CANARY_TABLE} VALUES (%s, %s, now())", (self.run_id, seq))
        except psycopg.Error as exc:
            self.close()
            return False, None, self._said(exc)[:200], write
        write.acknowledged = True
        return True, round((time.perf_counter() - started) * 1000, 2), "committed", write

    def read_back(self) -> tuple[set[tuple[str, int]], str | None]:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                rows = conn.execute(f"SELECT seq FROM {CANARY_TABLE} WHERE run_id = %s", (self.run_id,)).fetchall()
        except psycopg.Error as exc:
            return set(), f"the database canary could not be read back: {self._said(exc)}"[:300]
        return {("db", seq) for (seq,) in rows}, None

    def _said(self, exc: BaseException) -> str:
        """The error's first line, with the DSN's password masked should libpq quote it."""
        from psycopg.conninfo import conninfo_to_dict

        text = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        try:
            password = conninfo_to_dict(self.dsn).get("password")
        except Exception:  # noqa: BLE001 - a DSN that does not parse was refused before any probe ran
            password = None
        return text.replace(str(password), MASK) if password else text

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
                pass
            self._conn = None
