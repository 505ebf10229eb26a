"""The gate judges the contract, not the stand-in: here it checks a different server, written from the
contract alone (the standard library's HTTP server over TLS, one process, no load balancer), healthy
and with one property broken at a time.
"""
from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import jwt
import pytest

from conftest import SuiteRun, run_suite
from harness.local.tls import ensure_certificates

KEY = "contract-server-signing-key-of-32-bytes-or-more"
ACCOUNT = {"email": "gate@example.com", "password": "correct horse battery staple"}
BROKEN: set[str] = set()  # which property the running server gets wrong


class ContractHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-App-Version", "2026.11.25" if "version" not in BROKEN else "2026.11.01")
        self.send_header("X-Task-Id", "only-task")
        self.send_header("Set-Cookie", "AWSALB=only-task; Path=/")
        if "hsts" not in BROKEN:
            self.send_header("Strict-Transport-Security", "max-age=63072000")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(data)

    def token(self, kind: str) -> str:
        now = dt.datetime.now(dt.timezone.utc)
        return jwt.encode({"sub": ACCOUNT["email"], "typ": kind, "exp": now + dt.timedelta(minutes=5)}, KEY, "HS256")

    def do_GET(self) -> None:
        if self.path == "/api/health":
            self.send_json(200, {"status": "ok", "info": {"database": {"status": "up"}}, "error": {},
                                 "details": {"database": {"status": "up"}}})
        elif self.path == "/api/version":
            self.send_json(200, {"version": "2026.11.25", "task": "only-task"})
        elif self.path == "/api/auth/me":
            try:
                claims = jwt.decode(self.headers.get("Authorization", "").removeprefix("Bearer "), KEY, ["HS256"])
                assert claims["typ"] == "access"
                self.send_json(200, {"email": claims["sub"]})
            except (jwt.PyJWTError, AssertionError):
                self.send_json(401, {"statusCode": 401, "message": "Unauthorized"})
        else:
            self.send_json(404, {"statusCode": 404, "message": f"Cannot GET {self.path}"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/api/auth/login" and body == ACCOUNT:
            self.send_json(201, {"accessToken": self.token("access"), "refreshToken": self.token("refresh")})
        elif self.path == "/api/auth/refresh" and "refresh" not in BROKEN:
            try:
                assert jwt.decode(body.get("refreshToken", ""), KEY, ["HS256"])["typ"] == "refresh"
                self.send_json(201, {"accessToken": self.token("access"), "refreshToken": self.token("refresh")})
            except (jwt.PyJWTError, AssertionError):
                self.send_json(401, {"statusCode": 401, "message": "Unauthorized"})
        else:
            self.send_json(401, {"statusCode": 401, "message": "Unauthorized"})


class RedirectHandler(BaseHTTPRequestHandler):
    https_port = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(308)
        self.send_header("Location", f"https://localhost:{self.https_port}{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    certs = ensure_certificates(tmp_path_factory.mktemp("other-ca"), "localhost", days=90)
    https = ThreadingHTTPServer(("127.0.0.1", 0), ContractHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_pem)
    https.socket = context.wrap_socket(https.socket, server_side=True)
    RedirectHandler.https_port = https.server_address[1]
    http = ThreadingHTTPServer(("127.0.0.1", 0), RedirectHandler)
    for s in (https, http):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield {"base": f"https://localhost:{https.server_address[1]}", "http": f"http://localhost:{http.server_address[1]}",
           "ca": str(certs.ca_file)}
    for s in (https, http):
        s.shutdown()
        s.server_close()


def gate(server: dict[str, str], tmp_path: Any) -> SuiteRun:
    return run_suite("--base-url", server["base"], "--http-url", server["http"], "--ca-bundle", server["ca"],
                     "--expect-version", "2026.11.25", "--smoke-user", ACCOUNT["email"],
                     "--smoke-password", ACCOUNT["password"], suite="smoke", reports=tmp_path / "reports")


def test_a_server_that_follows_the_contract_passes(server, tmp_path):
    BROKEN.clear()
    run = gate(server, tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.summary["counts"]["pass"] == 9


@pytest.mark.parametrize("broken, rid, seen", [
    ("hsts", "SMK-04", "Strict-Transport-Security missing"),
    ("version", "SMK-08", "not version 2026.11.25: seen ['2026.11.01']"),
    ("refresh", "SMK-06", "refresh: POST"),
])
def test_a_broken_property_fails_its_check_naming_what_was_seen(server, broken, rid, seen, tmp_path):
    BROKEN.clear()
    BROKEN.add(broken)
    try:
        run = gate(server, tmp_path)
    finally:
        BROKEN.clear()
    assert run.returncode == 1
    assert run.ids_with("fail", "error") == {rid}
    assert seen in run.message(rid), run.message(rid)
