"""The local stand-in of the Dougust API: one ECS task's worth of it, implementing the contract the smoke
gate assumes (docs/design.md, "The smoke API contract"), on PostgreSQL.

It is configured as the NestJS container is, from its environment only: PORT, DATABASE_URL, JWT_SECRET,
JWT_REFRESH_SECRET, JWT_ACCESS_TOKEN_TTL, JWT_REFRESH_TOKEN_TTL, TENANT_ID; the task launcher adds
TASK_ID, APP_VERSION (the image tag) and ADMIN_PORT. The admin port, on 127.0.0.1 only and never behind
the load balancer, switches faults on and off so the self-tests can break one property at a time.

HARNESS_FAULTS, a stand-in-only switch that no real task definition sets, is a JSON object of the same
faults the admin port accepts (FAULTS), switched on from the task's start: a task definition revision
carrying `{"health_down": true}` in its container environment starts tasks that fail their health check
from birth, as a bad image would, so a rollout to it can be shown to keep the old tasks serving. The admin
port can still change them at run time.

    python -m harness.local.app
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import jwt
import uvicorn
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id BIGSERIAL PRIMARY KEY, tenant TEXT NOT NULL, email TEXT NOT NULL, password_hash TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(), UNIQUE (tenant, email));
CREATE TABLE IF NOT EXISTS notes (
    id BIGSERIAL PRIMARY KEY, tenant TEXT NOT NULL, user_id BIGINT NOT NULL REFERENCES users(id),
    title TEXT NOT NULL, body TEXT NOT NULL DEFAULT '', created_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS notes_owner ON notes (tenant, user_id, id);
"""
FAULTS = {
    "health_down": "health reports the database down (503)",
    "slow_ms": "every response is delayed this many milliseconds",
    "version": "report this version instead of the deployed one",
    "accept_forged": "accept access tokens whatever their signature",
    "refresh_broken": "the refresh endpoint answers 500",
    "not_found_as": "unknown routes answer 500 ('500') or an HTML page ('html') instead of JSON 404",
    "insecure_headers": "drop the security headers and add X-Powered-By",
    "cpu_ms": "every request but the health check first burns this many milliseconds of CPU on the event loop",
}


def ttl_seconds(value: str) -> int:
    """NestJS-style durations: '15m', '30d', '3600' (seconds)."""
    match = re.fullmatch(r"(\d+)\s*([smhd]?)", value.strip())
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def burn_cpu(seconds: float) -> None:
    """Busy-loop until this thread has used `seconds` of CPU: CPU-bound handler code, which blocks the
    event loop as it would block Node's. Counted in CPU, not wall time, so a busy machine does not make a
    request cost less CPU; the health check is spared, so an idle service stays idle."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2 ** 14, r=8, p=1)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    _, salt, digest = stored.split("$")
    candidate = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=2 ** 14, r=8, p=1)
    return hmac.compare_digest(candidate, base64.b64decode(digest))


def start_faults(value: str) -> dict[str, Any]:
    """HARNESS_FAULTS as a dict of known faults; empty when unset. A malformed value stops the task, as a
    container whose configuration is wrong exits at start."""
    if not value.strip():
        return {}
    try:
        faults = json.loads(value)
    except ValueError as exc:
        raise SystemExit(f"app: HARNESS_FAULTS is not JSON: {exc}") from None
    if not isinstance(faults, dict):
        raise SystemExit("app: HARNESS_FAULTS must be a JSON object of faults")
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise SystemExit(f"app: HARNESS_FAULTS has unknown faults {unknown}; known: {sorted(FAULTS)}")
    return faults


@dataclass
class Settings:
    port: int
    admin_port: int | None
    database_url: str
    jwt_secret: str
    jwt_refresh_secret: str
    access_ttl: int
    refresh_ttl: int
    tenant: str
    task_id: str
    version: str
    faults: dict[str, Any] = field(default_factory=dict)  # switched on from the start (HARNESS_FAULTS)

    @classmethod
    def from_environment(cls, env: dict[str, str]) -> Settings:
        missing = [k for k in ("DATABASE_URL", "JWT_SECRET", "JWT_REFRESH_SECRET") if not env.get(k)]
        if missing:
            raise SystemExit(f"app: missing environment {missing}; the task definition's secrets inject them")
        return cls(port=int(env.get("PORT", "3000")), admin_port=int(env["ADMIN_PORT"]) if env.get("ADMIN_PORT") else None,
                   database_url=env["DATABASE_URL"], jwt_secret=env["JWT_SECRET"],
                   jwt_refresh_secret=env["JWT_REFRESH_SECRET"],
                   access_ttl=ttl_seconds(env.get("JWT_ACCESS_TOKEN_TTL", "15m")),
                   refresh_ttl=ttl_seconds(env.get("JWT_REFRESH_TOKEN_TTL", "30d")),
                   tenant=env.get("TENANT_ID", "default"), task_id=env.get("TASK_ID", "task"),
                   version=env.get("APP_VERSION", "unknown"), faults=start_faults(env.get("HARNESS_FAULTS", "")))


@dataclass
class State:
    settings: Settings
    pool: AsyncConnectionPool
    faults: dict[str, Any] = field(default_factory=dict)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"statusCode": status, "message": message}, status_code=status)


def build_app(settings: Settings) -> tuple[Starlette, Starlette]:
    """The API and its admin app, sharing one state (pool, faults)."""
    pool = AsyncConnectionPool(settings.database_url, min_size=1, max_size=10, open=False, timeout=5,
                               kwargs={"connect_timeout": 3})
    state = State(settings, pool, dict(settings.faults))

    async def health(request: Request) -> Response:
        try:
            if state.faults.get("health_down"):
                raise RuntimeError("database switched down by a fault")
            async with pool.connection(timeout=3) as conn:
                await conn.execute("SELECT 1")
            up = {"database": {"status": "up"}}
            return JSONResponse({"status": "ok", "info": up, "error": {}, "details": up})
        except Exception as exc:  # any failure to reach the database is "down", as Terminus reports it
            down = {"database": {"status": "down", "message": str(exc)[:200]}}
            return JSONResponse({"status": "error", "info": {}, "error": down, "details": down}, status_code=503)

    def tokens(user_id: int, email: str) -> dict[str, str]:
        now = dt.datetime.now(dt.timezone.utc)
        claims = {"sub": str(user_id), "email": email, "tenant": settings.tenant, "iat": now}
        access = jwt.encode({**claims, "exp": now + dt.timedelta(seconds=settings.access_ttl), "typ": "access"},
                            settings.jwt_secret, algorithm="HS256")
        refresh = jwt.encode({**claims, "exp": now + dt.timedelta(seconds=settings.refresh_ttl), "typ": "refresh",
                              "jti": secrets.token_hex(8)}, settings.jwt_refresh_secret, algorithm="HS256")
        return {"accessToken": access, "refreshToken": refresh}

    async def credentials(request: Request) -> tuple[str, str] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        email, password = body.get("email") if isinstance(body, dict) else None, body.get("password") if isinstance(body, dict) else None
        if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
            return None
        return email.lower(), password

    async def register(request: Request) -> Response:
        given = await credentials(request)
        if given is None:
            return error(400, "email and password are required")
        async with pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO users (tenant, email, password_hash) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant, email) DO NOTHING RETURNING id", (settings.tenant, given[0], hash_password(given[1])))
            row = await cur.fetchone()
        if row is None:
            return error(409, "email already registered")
        return JSONResponse(tokens(row[0], given[0]), status_code=201)

    async def login(request: Request) -> Response:
        given = await credentials(request)
        if given is None:
            return error(400, "email and password are required")
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT id, password_hash FROM users WHERE tenant = %s AND email = %s",
                                     (settings.tenant, given[0]))
            row = await cur.fetchone()
        if row is None or not verify_password(given[1], row[1]):
            return error(401, "Unauthorized")
        return JSONResponse(tokens(row[0], given[0]), status_code=201)

    async def refresh(request: Request) -> Response:
        if state.faults.get("refresh_broken"):
            return error(500, "Internal server error")
        try:
            body = await request.json()
            claims = jwt.decode(body["refreshToken"], settings.jwt_refresh_secret, algorithms=["HS256"])
        except (ValueError, KeyError, TypeError, jwt.PyJWTError):
            return error(401, "Unauthorized")
        if claims.get("typ") != "refresh" or claims.get("tenant") != settings.tenant:
            return error(401, "Unauthorized")
        return JSONResponse(tokens(int(claims["sub"]), claims["email"]), status_code=201)

    def authenticated(request: Request) -> dict[str, Any] | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return None
        token = header.removeprefix("Bearer ")
        try:
            if state.faults.get("accept_forged"):
                claims = jwt.decode(token, options={"verify_signature": False})
            else:
                claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            return None
        if claims.get("typ") != "access" or claims.get("tenant") != settings.tenant:
            return None
        return claims

    async def me(request: Request) -> Response:
        claims = authenticated(request)
        if claims is None:
            return error(401, "Unauthorized")
        return JSONResponse({"id": int(claims["sub"]), "email": claims["email"], "tenantId": claims["tenant"]})

    async def notes(request: Request) -> Response:
        claims = authenticated(request)
        if claims is None:
            return error(401, "Unauthorized")
        user = int(claims["sub"])
        async with pool.connection() as conn:
            # A cursor's row factory, not the connection's: a pooled connection keeps what is set on it,
            # and the next request's tuple-reading code would get dicts.
            rows = conn.cursor(row_factory=dict_row)
            if request.method == "POST":
                body = await request.json()
                if not isinstance(body, dict) or not isinstance(body.get("title"), str) or not body["title"]:
                    return error(400, "title is required")
                cur = await rows.execute(
                    "INSERT INTO notes (tenant, user_id, title, body) VALUES (%s, %s, %s, %s) "
                    "RETURNING id, title, body, created_at", (settings.tenant, user, body["title"], str(body.get("body", ""))))
                return JSONResponse(_note(await cur.fetchone()), status_code=201)
            cur = await rows.execute("SELECT id, title, body, created_at FROM notes WHERE tenant = %s AND user_id = %s "
                                     "ORDER BY id DESC LIMIT 50", (settings.tenant, user))
            return JSONResponse([_note(r) for r in await cur.fetchall()])

    async def note(request: Request) -> Response:
        claims = authenticated(request)
        if claims is None:
            return error(401, "Unauthorized")
        async with pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                "SELECT id, title, body, created_at FROM notes WHERE tenant = %s AND user_id = %s AND id = %s",
                (settings.tenant, int(claims["sub"]), int(request.path_params["id"])))
            row = await cur.fetchone()
        return JSONResponse(_note(row)) if row else error(404, "Note not found")

    async def version(request: Request) -> Response:
        return JSONResponse({"version": state.faults.get("version") or settings.version, "task": settings.task_id})

    async def not_found(request: Request, exc: Exception) -> Response:
        kind = state.faults.get("not_found_as")
        if kind == "500":
            return error(500, "Internal server error")
        if kind == "html":
            return HTMLResponse("<html><body><h1>Not Found</h1></body></html>", status_code=404)
        return error(404, f"Cannot {request.method} {request.url.path}")

    async def server_error(request: Request, exc: Exception) -> Response:
        return error(500, "Internal server error")

    async def headers(request: Request, call_next: Any) -> Response:
        burn = int(state.faults.get("cpu_ms") or 0)
        if burn and request.url.path != "/api/health":
            burn_cpu(burn / 1000)
        slow = int(state.faults.get("slow_ms") or 0)
        if slow:
            await asyncio.sleep(slow / 1000)
        response = await call_next(request)
        response.headers["X-App-Version"] = str(state.faults.get("version") or settings.version)
        response.headers["X-Task-Id"] = settings.task_id
        if state.faults.get("insecure_headers"):
            response.headers["X-Powered-By"] = "Express"
        else:
            response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=False)
        try:
            async with pool.connection(timeout=10) as conn:
                await conn.execute(SCHEMA)
        except Exception:  # the database may be down at start; health says so, and the pool keeps trying
            pass
        yield
        await pool.close()

    api = Starlette(routes=[
        Route("/api/health", health),
        Route("/api/version", version),
        Route("/api/auth/register", register, methods=["POST"]),
        Route("/api/auth/login", login, methods=["POST"]),
        Route("/api/auth/refresh", refresh, methods=["POST"]),
        Route("/api/auth/me", me),
        Route("/api/notes", notes, methods=["GET", "POST"]),
        Route("/api/notes/{id:int}", note),
    ], exception_handlers={404: not_found, 405: not_found, 500: server_error},
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=headers)], lifespan=lifespan)

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            state.faults.clear()
        elif request.method == "POST":
            body = await request.json()
            unknown = sorted(set(body) - set(FAULTS))
            if unknown:
                return error(400, f"unknown faults {unknown}; known: {sorted(FAULTS)}")
            state.faults.update(body)
        return JSONResponse({"faults": state.faults, "known": FAULTS, "task": settings.task_id})

    admin = Starlette(routes=[Route("/faults", faults, methods=["GET", "POST", "DELETE"])])
    return api, admin


def _note(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "title": row["title"], "body": row["body"], "createdAt": row["created_at"].isoformat()}


async def serve(settings: Settings) -> None:
    api, admin = build_app(settings)
    servers = [uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=settings.port, log_level="warning",
                                             server_header=False, date_header=True, access_log=False))]
    if settings.admin_port:
        servers.append(uvicorn.Server(uvicorn.Config(admin, host="127.0.0.1", port=settings.admin_port,
                                                     log_level="warning", server_header=False, access_log=False)))
    await asyncio.gather(*(s.serve() for s in servers))


def main() -> None:
    asyncio.run(serve(Settings.from_environment(dict(os.environ))))


if __name__ == "__main__":
    main()
