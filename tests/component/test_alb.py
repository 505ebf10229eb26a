"""The local ALB (HAProxy) behaves as the smoke gate expects the real one to, and its fault variants
lack exactly what they should: checked through its listeners with two stand-in tasks behind it."""
from __future__ import annotations

import dataclasses
import http.client
import json
import ssl
import socket
import threading
import time
from collections import Counter
from http.cookies import SimpleCookie
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator, NamedTuple
from urllib.parse import urlsplit

import pytest

from harness.util.net import free_port
from harness.local.alb import Alb, AlbConfig
from harness.local.tls import Certificates, ensure_certificates
from support.servers import JsonHandler

pytestmark = pytest.mark.haproxy


class Task(ThreadingHTTPServer):
    """A stand-in app task on a free port: /api/health answers `health`, /whoami who it is and what
    the load balancer told it about the client."""
    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _TaskHandler)
        self.name = name
        self.health = 200
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()


class _TaskHandler(JsonHandler):
    server: Task

    def do_GET(self) -> None:
        if self.path == "/api/health":
            status, body = self.server.health, {"status": "ok" if self.server.health == 200 else "error"}
        elif self.path == "/whoami":
            status, body = 200, {"task": self.server.name, "proto": self.headers["X-Forwarded-Proto"],
                                 "for": self.headers["X-Forwarded-For"]}
        else:
            status, body = 404, {"statusCode": 404, "message": "Not Found"}
        self.send_json(status, body)


class Response(NamedTuple):
    status: int
    headers: http.client.HTTPMessage
    body: str

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def awsalb(self) -> str | None:
        cookies = SimpleCookie()
        for header in self.headers.get_all("Set-Cookie") or []:
            cookies.load(header)
        return cookies["AWSALB"].value if "AWSALB" in cookies else None


def get(url: str, ca: Path, cookie: str | None = None) -> Response:
    """One request on a fresh connection, redirects not followed."""
    parts = urlsplit(url)
    conn = (http.client.HTTPSConnection(parts.hostname, parts.port, timeout=5,
                                        context=ssl.create_default_context(cafile=str(ca)))
            if parts.scheme == "https" else http.client.HTTPConnection(parts.hostname, parts.port, timeout=5))
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                     headers={"Cookie": f"AWSALB={cookie}"} if cookie else {})
        response = conn.getresponse()
        return Response(response.status, response.headers, response.read().decode())
    finally:
        conn.close()


def handshake(port: int, context: ssl.SSLContext) -> tuple[str | None, dict]:
    """The protocol version and the peer certificate of a TLS handshake with localhost:port."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.version(), tls.getpeercert()


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until `condition` held; fails the test past `timeout`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
def tasks() -> Iterator[list[Task]]:
    servers = [Task("task-1"), Task("task-2")]
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return ensure_certificates(tmp_path / "tls")


@pytest.fixture
def make_alb(tmp_path: Path, tasks: list[Task], certs: Certificates) -> Iterator[Callable[..., Alb]]:
    """Start the local ALB with the defaults but for the fields given; a second call in the same test
    reconfigures the same HAProxy (same state dir and ports). Stopped at the end."""
    base = AlbConfig(root=tmp_path / "state", http_port=free_port(), https_port=free_port(),
                     stats_port=free_port(), backends=tuple((t.name, t.port) for t in tasks),
                     certificate=certs.server_pem)
    started: list[Alb] = []

    def make(**fields: object) -> Alb:
        alb = Alb(dataclasses.replace(base, **fields))
        alb.start()
        started.append(alb)
        return alb

    yield make
    for alb in started:  # the first one started the process and reaps it; the rest find it gone
        alb.stop()


@pytest.fixture
def alb(make_alb: Callable[..., Alb]) -> Alb:
    return make_alb()


def whoami(alb: Alb, ca: Path, cookie: str | None = None) -> str:
    return get(alb.urls["https"] + "/whoami", ca, cookie).json()["task"]


def test_http_listener_redirects_to_https_keeping_path_and_query(alb, certs):
    response = get(alb.urls["http"] + "/api/auth/me?a=1&b=two", certs.ca_file)
    assert response.status == 301
    assert response.headers["Location"] == alb.urls["https"] + "/api/auth/me?a=1&b=two"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_https_certificate_verifies_against_the_ca_and_tls_below_1_2_is_refused(alb, certs):
    port = alb.config.https_port
    version, _ = handshake(port, ssl.create_default_context(cafile=str(certs.ca_file)))
    assert version in ("TLSv1.2", "TLSv1.3")

    def pinned(version: ssl.TLSVersion) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(certs.ca_file))
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so the client can offer TLS 1.1 at all
        context.minimum_version = context.maximum_version = version
        return context

    assert handshake(port, pinned(ssl.TLSVersion.TLSv1_2))[0] == "TLSv1.2"
    with pytest.raises(ssl.SSLError) as refused:
        handshake(port, pinned(ssl.TLSVersion.TLSv1_1))
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"  # the server's alert, not a client limit

    seen = get(alb.urls["https"] + "/whoami", certs.ca_file).json()
    assert (seen["proto"], seen["for"]) == ("https", "127.0.0.1")


def test_requests_without_cookie_alternate_over_both_tasks(alb, certs):
    assert Counter(whoami(alb, certs.ca_file) for _ in range(10)) == {"task-1": 5, "task-2": 5}


def test_awsalb_cookie_keeps_a_client_on_one_task(alb, certs):
    first = get(alb.urls["https"] + "/whoami", certs.ca_file)
    assert first.awsalb, first.headers
    assert {whoami(alb, certs.ca_file, first.awsalb) for _ in range(10)} == {first.json()["task"]}


def test_without_stickiness_no_awsalb_cookie_is_set(make_alb, certs):
    alb = make_alb(stickiness=False)
    responses = [get(alb.urls["https"] + "/whoami", certs.ca_file) for _ in range(4)]
    assert [r.awsalb for r in responses] == [None] * 4
    assert {r.json()["task"] for r in responses} == {"task-1", "task-2"}


def test_without_redirect_the_http_listener_serves_the_app(make_alb, certs):
    alb = make_alb(redirect=False)
    response = get(alb.urls["http"] + "/whoami", certs.ca_file)
    assert response.status == 200
    assert response.json()["proto"] == "http"


def test_failing_health_check_takes_a_task_out_and_with_none_left_fails_open(alb, tasks, certs):
    assert alb.status()["servers"] == {"task-1": "UP", "task-2": "UP"}
    tasks[0].health = 500
    took = wait_for(lambda: alb.status()["servers"]["task-1"] == "DOWN", timeout=3.5)
    assert alb.status()["servers"]["task-2"] == "UP", f"task-1 went DOWN after {took:.1f} s"
    assert {whoami(alb, certs.ca_file) for _ in range(6)} == {"task-2"}

    tasks[1].health = 500
    wait_for(lambda: alb.status()["servers"]["task-2"] == "DOWN", timeout=3.5)
    # As the ALB does with every target unhealthy: route to all of them, not to none.
    assert {whoami(alb, certs.ca_file) for _ in range(6)} == {"task-1", "task-2"}
    # ... and a client stuck to a task stays on it (the smoke gate's stickiness check holds in fail-open).
    stuck = get(alb.urls["https"] + "/whoami", certs.ca_file)
    assert stuck.awsalb and {whoami(alb, certs.ca_file, stuck.awsalb) for _ in range(6)} == {stuck.json()["task"]}

    tasks[0].health = 200  # rise 1: one good check brings it back
    wait_for(lambda: alb.status()["servers"]["task-1"] == "UP", timeout=2.5)
    assert whoami(alb, certs.ca_file) == "task-1"


def test_expiring_and_wrong_host_certificates_are_served_when_configured(make_alb, tmp_path, certs):
    expiring = ensure_certificates(tmp_path / "tls", days=3, name="expiring")
    alb = make_alb(certificate=expiring.server_pem)
    _, cert = handshake(alb.config.https_port, ssl.create_default_context(cafile=str(certs.ca_file)))
    left = ssl.cert_time_to_seconds(cert["notAfter"]) - time.time()
    assert 2.9 * 86400 < left <= 3 * 86400

    pid = alb.status()["pid"]
    wrong = ensure_certificates(tmp_path / "tls", host="wrong.example", name="wrong")
    alb = make_alb(certificate=wrong.server_pem)  # a reload of the same HAProxy
    assert alb.status()["pid"] == pid
    strict = ssl.create_default_context(cafile=str(certs.ca_file))
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(alb.config.https_port, strict)
    chain_only = ssl.create_default_context(cafile=str(certs.ca_file))
    chain_only.check_hostname = False  # the chain is still verified: only the name is wrong
    _, cert = handshake(alb.config.https_port, chain_only)
    assert cert["subjectAltName"] == (("DNS", "wrong.example"),)


def test_start_again_changes_nothing_and_stop_leaves_nothing_listening(alb, certs):
    pid = alb.status()["pid"]
    alb.start()
    assert alb.status()["pid"] == pid
    assert get(alb.urls["https"] + "/whoami", certs.ca_file).status == 200
    # The access log, there to read when a test fails; HAProxy writes the line once the stream ends.
    wait_for(lambda: "GET /whoami" in alb.log_file.read_text(), timeout=2)

    alb.stop()
    assert alb.status() == {"running": False, "pid": None, "servers": {}}
    assert not Path(f"/proc/{pid}").exists()  # exited and reaped
    for port in (alb.config.http_port, alb.config.https_port, alb.config.stats_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listens"
    alb.stop()  # stopping a stopped ALB is harmless
