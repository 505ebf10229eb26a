"""The gate judges the contract, not the stand-in: here it checks a different server, written from the
contract alone (the standard library's HTTP server over TLS, one process playing two tasks behind a sticky
balancer), in the styles real backends take and with one property broken at a time (SMK-10, which reads
ECS rather than the server, is deselected):
- tokens as JWTs or opaque `<base64 body>.<hmac>` strings (the token's format is the backend's business);
- version headers on every response, or set by an interceptor (none on a guard's 401 or a route-less 404);
- one task left on an old version; a server that trusts tokens without checking their signature or MAC.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import jwt
import pytest

from support.suites import ROOT, SuiteRun, run_suite
from harness.local.tls import ensure_certificates

KEY = "contract-server-signing-key-of-32-bytes-or-more"
# The password begins with "-" as a generated one may: the gate must take it as the option's value.
ACCOUNT = {"email": "gate@example.com", "password": "-correct horse battery staple"}
VERSION = "2026.11.25"


@dataclass
class Contract:
    """How the running server behaves; each test sets its own."""

    tokens: str = "jwt"  # or "opaque"
    verifies_tokens: bool = True  # False: trusts a token's claims without checking its signature or MAC
    interceptor: bool = False  # version headers set by an interceptor: none on 401s and 404s
    versions: dict[str, str] = field(default_factory=lambda: {"task-a": VERSION, "task-b": VERSION})
    hsts: bool = True
    refresh: bool = True


CONTRACT = Contract()
ROUND_ROBIN = itertools.count()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def issue(kind: str) -> str:
    claims = {"sub": ACCOUNT["email"], "typ": kind,
              "exp": int((dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)).timestamp())}
    if CONTRACT.tokens == "jwt":
        return jwt.encode(claims, KEY, "HS256")
    body = b64(json.dumps(claims).encode())
    return f"{body}.{b64(hmac.new(KEY.encode(), body.encode(), hashlib.sha256).digest())}"


def claims_of(token: str) -> dict[str, Any] | None:
    """The token's claims when the server accepts it, else None."""
    try:
        if CONTRACT.tokens == "jwt":
            return jwt.decode(token, KEY, ["HS256"], options={"verify_signature": CONTRACT.verifies_tokens})
        body, _, mac = token.rpartition(".")
        expected = b64(hmac.new(KEY.encode(), body.encode(), hashlib.sha256).digest())
        if CONTRACT.verifies_tokens and not hmac.compare_digest(mac, expected):
            return None
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return claims if claims["exp"] > dt.datetime.now(dt.timezone.utc).timestamp() else None
    except (jwt.PyJWTError, ValueError, KeyError, TypeError):
        return None


class ContractHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def task(self) -> str:
        """The balancer's choice: the task the affinity cookie names, else the next one in turn."""
        jar = SimpleCookie(self.headers.get("Cookie", ""))
        if "AWSALB" in jar and jar["AWSALB"].value in CONTRACT.versions:
            return jar["AWSALB"].value
        tasks = sorted(CONTRACT.versions)
        return tasks[next(ROUND_ROBIN) % len(tasks)]

    def send_json(self, status: int, body: Any, intercepted: bool = True) -> None:
        task = self.task()
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if intercepted or not CONTRACT.interceptor:
            self.send_header("X-App-Version", CONTRACT.versions[task])
            self.send_header("X-Task-Id", task)
        self.send_header("Set-Cookie", f"AWSALB={task}; Path=/")
        if CONTRACT.hsts:
            self.send_header("Strict-Transport-Security", "max-age=63072000")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(data)

    def unauthorized(self) -> None:
        # A guard rejects the request before any interceptor runs.
        self.send_json(401, {"statusCode": 401, "message": "Unauthorized"}, intercepted=False)

    def do_GET(self) -> None:
        if self.path == "/api/health":
            self.send_json(200, {"status": "ok", "info": {"database": {"status": "up"}}, "error": {},
                                 "details": {"database": {"status": "up"}}})
        elif self.path == "/api/version":
            self.send_json(200, {"version": CONTRACT.versions[self.task()], "task": self.task()})
        elif self.path == "/api/auth/me":
            claims = claims_of(self.headers.get("Authorization", "").removeprefix("Bearer "))
            if claims and claims.get("typ") == "access":
                self.send_json(200, {"email": claims["sub"]})
            else:
                self.unauthorized()
        else:
            self.send_json(404, {"statusCode": 404, "message": f"Cannot GET {self.path}"}, intercepted=False)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/api/auth/login" and body == ACCOUNT:
            self.send_json(201, {"accessToken": issue("access"), "refreshToken": issue("refresh")})
        elif self.path == "/api/auth/refresh" and CONTRACT.refresh and \
                (claims_of(body.get("refreshToken", "")) or {}).get("typ") == "refresh":
            self.send_json(201, {"accessToken": issue("access"), "refreshToken": issue("refresh")})
        else:
            self.unauthorized()


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


@pytest.fixture
def contract() -> Iterator[Contract]:
    global CONTRACT
    CONTRACT = Contract()
    yield CONTRACT
    CONTRACT = Contract()


def gate(server: dict[str, str], tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> SuiteRun:
    return run_suite("--base-url", server["base"], "--http-url", server["http"], "--ca-bundle", server["ca"],
                     "--expect-version", VERSION, "--smoke-user", ACCOUNT["email"],
                     f"--smoke-password={ACCOUNT['password']}", "-k", "not SMK-10", *extra, suite="smoke",
                     reports=tmp_path / "reports", env=env)


@pytest.mark.parametrize("style", [
    {}, {"tokens": "opaque"}, {"interceptor": True}, {"tokens": "opaque", "interceptor": True},
], ids=["JWT, headers everywhere", "opaque tokens", "interceptor-style headers", "opaque and interceptor"])
def test_a_server_that_follows_the_contract_passes(server, contract, style, tmp_path):
    for key, value in style.items():
        setattr(contract, key, value)
    run = gate(server, tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.summary["counts"]["pass"] == 9


@pytest.mark.parametrize("broken, rid, seen", [
    ({"hsts": False}, "SMK-04", "Strict-Transport-Security missing"),
    ({"versions": {"task-a": "2026.11.01", "task-b": "2026.11.01"}}, "SMK-08",
     f"not version {VERSION}: seen ['2026.11.01']"),
    ({"versions": {"task-a": VERSION, "task-b": "2026.11.01"}}, "SMK-08",
     f"seen ['2026.11.01', '{VERSION}']; 2026.11.01 from task-b; {VERSION} from task-a"),
    ({"versions": {"task-a": VERSION, "task-b": "2026.11.01"}, "interceptor": True}, "SMK-08",
     "2026.11.01 from task-b;"),
    ({"refresh": False}, "SMK-06", "refresh: POST"),
    ({"verifies_tokens": False}, "SMK-06", "forged token (the JWT re-signed with another key): GET"),
    ({"verifies_tokens": False, "tokens": "opaque"}, "SMK-06", "forged token (the opaque token with character"),
], ids=["no HSTS", "old version everywhere", "one task behind", "one task behind, interceptor style",
        "refresh broken", "JWT signature not checked", "opaque token MAC not checked"])
def test_a_broken_property_fails_its_check_naming_what_was_seen(server, contract, broken, rid, seen, tmp_path):
    for key, value in broken.items():
        setattr(contract, key, value)
    run = gate(server, tmp_path)
    assert run.returncode == 1
    assert run.ids_with("fail", "error") == {rid}, run.summary["counts"]
    assert seen in run.message(rid), run.message(rid)


def test_the_plan_can_ask_for_the_version_header_on_every_response(server, contract, tmp_path):
    contract.interceptor = True
    plan = (ROOT / "plan" / "dougust.toml").read_text().replace("every_response = false", "every_response = true")
    (tmp_path / "plan.toml").write_text(plan)
    run = gate(server, tmp_path, "--plan", str(tmp_path / "plan.toml"))
    assert run.ids_with("fail", "error") == {"SMK-08"}, run.summary["counts"]
    assert "carry no X-App-Version: GET /api/auth/me 401" in run.message("SMK-08"), run.message("SMK-08")


def test_an_exception_in_one_observation_step_errors_that_check_alone(server, contract, tmp_path):
    """A step that raises (here: reading the affinity cookie) must not cost the other eight their verdict."""
    run = gate(server, tmp_path, "-p", "break_cookie_reading", env={"PYTHONPATH": str(ROOT / "tests" / "data")})
    assert run.returncode == 1
    assert run.ids_with("error") == {"SMK-07"} and run.ids_with("pass") == {f"SMK-0{i}" for i in range(1, 10)} - {
        "SMK-07"}, run.summary["counts"]
    assert run.message("SMK-07") == "SMK-07 could not be observed: RuntimeError: cookie jar exploded", \
        run.message("SMK-07")
    assert "Traceback" not in run.stdout


def test_a_stability_window_passes_a_steady_server_and_fails_on_a_red_round_naming_when(server, contract, tmp_path):
    """--stable-for: a server that holds passes, with progress lines; one whose task-b starts answering
    with another version 3 s after the first green round fails SMK-08, saying when in the window."""
    run = gate(server, tmp_path / "steady", "--stable-for", "7")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "smoke gate stable for " in run.stdout and " of 7 s: every check holds" in run.stdout, run.stdout[-2000:]
    section = run.summary["gate"]
    assert section["stable_for_s"] == 7 and section["stable_s"] >= 7 and len(section["rounds"]) >= 4, section

    flip = threading.Timer(3.0, lambda: contract.versions.update({"task-b": "2026.11.1"}))
    flip.start()  # about 2 s after the first round: the gate's first round takes a second or so
    try:
        run = gate(server, tmp_path / "crashing", "--stable-for", "20")
    finally:
        flip.cancel()
    assert run.returncode == 1 and run.ids_with("fail", "error") == {"SMK-08"}, run.stdout[-3000:]
    message = run.message("SMK-08")
    assert re.match(r"\d+ s into the 20 s stability window: ", message) and "2026.11.1" in message, message
    assert run.summary["gate"]["stable_s"] < 20, run.summary["gate"]


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_stability_window_that_is_not_a_duration_is_one_line(server, tmp_path, value):
    run = gate(server, tmp_path, f"--stable-for={value}")
    assert run.returncode == 4 and run.error_lines == [
        f"ERROR: --stable-for {value}: give the stability window in seconds, 0 or more"], run.stderr
