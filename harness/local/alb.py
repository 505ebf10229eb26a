"""HAProxy on loopback as the local stand-in of the Application Load Balancer.

It reproduces what the smoke gate and the drills observe of the ALB: the HTTP listener's 301 to HTTPS,
TLS 1.2+ with the configured certificate, round robin over the tasks, health checks on the health path
that take a failing task out (and 503 when none is left), and the `AWSALB` stickiness cookie. Two
switches turn the redirect and the stickiness off, so the gate can be shown to catch their absence.

Every task slot is a server of the backend; a slot whose task is not in the target group (not started,
or being stopped) is in maintenance, and so is its fail-open backup, so HAProxy sends it nothing, as the
ALB sends nothing to a deregistered target. The ECS-agent stand-in registers and deregisters tasks at run
time through HAProxy's runtime API on an admin socket (TargetGroup); the configuration starts HAProxy with
the slots that were out of the group at the time marked `disabled`.

HAProxy runs in master-worker mode, in the foreground of its own session with its output appended to
`<root>/haproxy/haproxy.log` (a daemonised HAProxy closes stdout, and with it the only log target that
needs no syslog). The master's PID goes to the pid file: stop() and reloads signal that PID, so a
process started by another harness command is stopped the same way, and nothing is ever found by name.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.util.net import accepts
from harness.util.wait import WaitTimeout, until

BACKEND = "app"  # HAProxy's name for the target group; its servers are the tasks
FAIL_OPEN = "-fail-open"  # suffix of the unchecked backup servers that make the ALB fail open
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
HARD_STOP_AFTER = "5s"  # the longest an old worker may drain connections after a reload
ADMIN_SOCKET = "admin.sock"  # HAProxy's runtime API, in the state directory, owner-only
SOCKET_PATH_MAX = 107  # bytes of a Unix socket path (sun_path less its terminating NUL)


class AlbError(RuntimeError):
    """HAProxy refused the configuration, failed to start, reload or stop; the message says why."""


@dataclass(frozen=True)
class AlbConfig:
    root: Path  # state directory: the configuration, pid file and log go under root / "haproxy"
    http_port: int = 18080
    https_port: int = 18443
    stats_port: int = 18404
    backends: tuple[tuple[str, int], ...] = (("task-1", 13001), ("task-2", 13002))  # name, port on 127.0.0.1
    certificate: Path = field(kw_only=True)  # server certificate + key in one PEM (tls.ensure_certificates)
    redirect: bool = True  # False: the HTTP listener serves the app instead of redirecting (a fault variant)
    stickiness: bool = True  # False: no AWSALB cookie (a fault variant)
    health_path: str = "/api/health"
    deregistered: frozenset[str] = frozenset()  # backends out of the target group: in maintenance at start

    @property
    def admin_socket(self) -> Path:
        return admin_socket(self.root)


def admin_socket(root: Path) -> Path:
    """Where the HAProxy of state directory `root` takes runtime commands (TargetGroup)."""
    return root.absolute() / "haproxy" / ADMIN_SOCKET


class Alb:
    """One HAProxy per state directory. Every method finds it through the pid file there, so one command
    can start it and another inspect or stop it."""

    def __init__(self, config: AlbConfig) -> None:
        self.config = config
        self.state_dir = config.root.absolute() / "haproxy"  # absolute: the PID check matches it in argv
        self.config_file = self.state_dir / "haproxy.cfg"
        self.pid_file = self.state_dir / "haproxy.pid"
        self.log_file = self.state_dir / "haproxy.log"
        self._process: subprocess.Popen[bytes] | None = None  # set when this object started the master
        self._log_mark = 0  # where the log stood before the last start or reload: errors are past it

    @property
    def urls(self) -> dict[str, str]:
        c = self.config
        return {"https": f"https://localhost:{c.https_port}", "http": f"http://localhost:{c.http_port}",
                "stats": f"http://127.0.0.1:{c.stats_port}/"}

    def start(self) -> None:
        """Serve the configuration: start HAProxy, or reload it when it runs another configuration, or
        leave it alone when it already runs this one. Returns once the listeners accept connections."""
        socket_path = str(self.config.admin_socket).encode()
        if len(socket_path) > SOCKET_PATH_MAX:
            raise AlbError(f"the admin socket path {self.config.admin_socket} is {len(socket_path)} bytes, more "
                           f"than a Unix socket takes ({SOCKET_PATH_MAX}): use a state directory with a shorter path")
        text = render_config(self.config)
        pid = self._running_pid()
        if pid is not None and self._read(self.config_file) == text:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        candidate = self.state_dir / "haproxy.cfg.new"
        candidate.write_text(text)
        check = subprocess.run([_haproxy(), "-c", "-f", str(candidate)], capture_output=True, text=True)
        if check.returncode != 0:
            said = [line for line in (check.stderr or check.stdout).splitlines() if "[NOTICE]" not in line]
            raise AlbError(f"HAProxy refused the configuration {candidate}:\n" + "\n".join(said))
        os.replace(candidate, self.config_file)
        self._log_mark = self.log_file.stat().st_size if self.log_file.exists() else 0
        if pid is None:
            self._launch()
        else:
            self._reload(pid)
        self._wait_listening()

    def stop(self) -> None:
        """Stop the HAProxy this state directory runs (by the PID in its pid file); wait until it has
        exited and its ports refuse connections."""
        pid = self._running_pid()
        if pid is not None:
            workers = _children(pid)
            os.kill(pid, signal.SIGTERM)  # the master stops its workers, waits for them, then exits
            if not self._wait_exit(pid, STOP_TIMEOUT_S):
                for child in _children(pid) | workers:
                    _kill(child)
                _kill(pid)
                if not self._wait_exit(pid, STOP_TIMEOUT_S):
                    raise AlbError(f"HAProxy (pid {pid}) survived SIGTERM and SIGKILL")
        self._reap()
        self.pid_file.unlink(missing_ok=True)
        ports = self._ports()
        try:
            until(lambda: not any(accepts(p, timeout_s=0.2) for p in ports), STOP_TIMEOUT_S,
                  f"{ports} to refuse connections", poll_s=0.02)
        except WaitTimeout:
            busy = [p for p in ports if accepts(p, timeout_s=0.2)]
            raise AlbError(f"HAProxy of {self.state_dir} is stopped, but something still listens on {busy}") from None

    def status(self) -> dict[str, Any]:
        """Whether HAProxy runs, its master's PID, and the health of each task in the target group as
        HAProxy's checks see it ("UP", "DOWN", or "no check"), read from the stats endpoint's CSV; while
        it runs, the servers in maintenance (tasks out of the target group) are listed under "deregistered"."""
        pid = self._running_pid()
        if pid is None:
            return {"running": False, "pid": None, "servers": {}}
        url = self.urls["stats"] + ";csv"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                rows = list(csv.DictReader(io.StringIO(response.read().decode().lstrip("# "))))
        except OSError as e:
            raise AlbError(f"HAProxy (pid {pid}) runs but its stats at {url} do not answer: {e}") from e
        # "UP 1/2" is up with one failed check of the two that take it down: UP, as HAProxy routes to it.
        servers = {r["svname"]: re.sub(r" \d+/\d+$", "", r["status"]) for r in rows
                   if r["pxname"] == BACKEND and r["svname"] not in ("FRONTEND", "BACKEND")
                   and not r["svname"].endswith(FAIL_OPEN)}
        return {"running": True, "pid": pid, "servers": {k: v for k, v in servers.items() if not _maint(v)},
                "deregistered": sorted(k for k, v in servers.items() if _maint(v))}

    def _launch(self) -> None:
        self._reap()
        self.pid_file.unlink(missing_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
            log.flush()
            # -W master-worker; -db keeps it in the foreground, so stdout (the log) stays open. A session
            # of its own: it outlives the command that started it, and a Ctrl-C meant for the harness
            # does not kill it behind the harness's back (the harness stops it).
            self._process = subprocess.Popen(
                [_haproxy(), "-W", "-db", "-f", str(self.config_file), "-p", str(self.pid_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            until(self._wrote_pid_file, START_TIMEOUT_S, "the pid file", poll_s=0.01)
        except WaitTimeout:
            raise AlbError(f"HAProxy wrote no pid file within {START_TIMEOUT_S:.0f} s; {self._log_tail()}") from None

    def _wrote_pid_file(self) -> bool:
        """The master just launched wrote its PID; AlbError as soon as it has exited instead."""
        if self._running_pid() == self._process.pid:
            return True
        if self._process.poll() is not None:
            self._process = None
            raise AlbError(f"HAProxy exited at start; {self._log_tail()}")
        return False

    def _reload(self, pid: int) -> None:
        """Seamless reload: the master re-reads the configuration and starts a new worker, the old one
        hands over its listeners and goes. Done when every worker is one the reload started."""
        old = _children(pid)
        os.kill(pid, signal.SIGUSR2)

        def reloaded() -> bool:
            current = _children(pid)
            return bool(current) and not current & old

        try:
            until(reloaded, START_TIMEOUT_S, f"HAProxy (pid {pid}) to reload", poll_s=0.01)
        except WaitTimeout:
            raise AlbError(f"HAProxy (pid {pid}) did not finish reloading {self.config_file}; "
                           f"{self._log_tail()}") from None

    def _wait_listening(self) -> None:
        """Until every port accepts; AlbError once START_TIMEOUT_S has passed or HAProxy is gone."""
        def not_listening() -> AlbError:
            return AlbError(f"HAProxy does not listen on {self._ports()}; {self._log_tail()}")

        def listening() -> bool:
            if all(accepts(p, timeout_s=0.2) for p in self._ports()):
                return True
            if self._running_pid() is None:
                raise not_listening()
            return False

        try:
            until(listening, START_TIMEOUT_S, "HAProxy to listen", poll_s=0.01)
        except WaitTimeout:
            raise not_listening() from None

    def _running_pid(self) -> int | None:
        """The master's PID from the pid file, if that process lives and is HAProxy on this config."""
        try:
            pid = int(self.pid_file.read_text().strip())
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        if state in ("Z", "X") or str(self.config_file).encode() not in cmdline:
            return None  # exited, or the PID now belongs to another process
        return pid

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._running_pid() == pid:
            if self._process is not None and self._process.pid == pid:
                try:
                    self._process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    return False
                continue
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _reap(self) -> None:
        """Collect this object's own master once it has exited, so it leaves no zombie behind."""
        if self._process is not None and self._process.poll() is not None:
            self._process = None

    def _ports(self) -> list[int]:
        return [self.config.http_port, self.config.https_port, self.config.stats_port]

    def _log_tail(self, lines: int = 15) -> str:
        """What HAProxy wrote since the last start or reload: the reason it failed."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(self._log_mark)
                tail = f.read().decode(errors="replace").splitlines()[-lines:]
        except OSError:
            tail = []
        return f"HAProxy said (in {self.log_file}):\n" + "\n".join(tail) if tail else f"nothing in {self.log_file}"

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text()
        except OSError:
            return ""


def render_config(config: AlbConfig) -> str:
    """The HAProxy configuration that behaves as the ALB does for the given ports, tasks and switches."""
    c = config
    cert_digest = hashlib.sha256(c.certificate.read_bytes()).hexdigest() if c.certificate.exists() else "missing"

    def out(name: str) -> str:
        return " disabled" if name in c.deregistered else ""

    servers = "\n".join(
        f"    server {name} 127.0.0.1:{port}" + (f" cookie {name}" if c.stickiness else "") + out(name)
        for name, port in c.backends)
    # The ALB fails open: with every target unhealthy it routes to all of them rather than to none. The
    # unchecked backups take the traffic only when no checked server is up; each carries its task's cookie
    # value, so a client stuck to a task stays on it when the whole group turns unhealthy.
    fail_open = "\n".join(f"    server {name}{FAIL_OPEN} 127.0.0.1:{port} backup no-check"
                          + (f" cookie {name}" if c.stickiness else "") + out(name) for name, port in c.backends)
    if c.redirect:
        # `redirect scheme https` would keep the Host header's port, the HTTP one: name the HTTPS port.
        location = f"https://%[req.hdr(host),host_only]:{c.https_port}%[pathq]"
        http_action = f"    http-request redirect location {location} code 301"
    else:
        http_action = f"    http-request set-header X-Forwarded-Proto http\n    default_backend {BACKEND}"
    stickiness = "    cookie AWSALB insert indirect nocache\n" if c.stickiness else ""
    return f"""\
# Written by harness.local.alb; rewritten on every start. Certificate sha256 {cert_digest}
# (a re-issued certificate changes this file, so start() reloads HAProxy to serve it).
global
    log stdout format raw local0
    hard-stop-after {HARD_STOP_AFTER}
    stats socket "{c.admin_socket}" mode 600 level admin

defaults
    mode http
    log global
    option httplog
    option dontlognull
    option forwardfor
    option redispatch
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 10s

frontend http_listener
    bind 127.0.0.1:{c.http_port}
{http_action}

frontend https_listener
    bind 127.0.0.1:{c.https_port} ssl crt "{c.certificate.absolute()}" ssl-min-ver TLSv1.2 alpn h2,http/1.1
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Port {c.https_port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
{stickiness}    option httpchk
    http-check send meth GET uri {c.health_path} ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server check inter 1s fall 2 rise 1
    option allbackups
{servers}
{fail_open}

listen stats
    bind 127.0.0.1:{c.stats_port}
    http-request set-log-level silent
    stats enable
    stats uri /
"""


@dataclass(frozen=True)
class Registration:
    registered: bool  # False: in maintenance, HAProxy sends it nothing
    sessions: int  # requests in flight on it now


class TargetGroup:
    """The target group's registrations, read and changed at run time through HAProxy's admin socket: a
    deregistered task is a server in maintenance, and its fail-open backup with it. No reload is needed,
    so the other tasks' connections and the stickiness of their clients are left alone."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def servers(self) -> dict[str, Registration] | None:
        """Every server of the backend, fail-open backups included; None when no HAProxy answers."""
        try:
            text = self._command("show stat")
        except OSError:
            return None
        return {r["svname"]: Registration(not _maint(r["status"]), int(r["scur"] or 0))
                for r in csv.DictReader(io.StringIO(text.lstrip("# ")))
                if r["pxname"] == BACKEND and r["svname"] not in ("FRONTEND", "BACKEND")}

    def set_registered(self, name: str, registered: bool) -> None:
        for server in (name, name + FAIL_OPEN):
            said = self._command(f"set server {BACKEND}/{server} state {'ready' if registered else 'maint'}").strip()
            if said:
                raise AlbError(f"HAProxy refused to change {server}: {said}")

    def _command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()


def _maint(status: str) -> bool:
    """HAProxy's stats say MAINT, or "MAINT (via ...)", for a server in maintenance."""
    return status.startswith("MAINT")


def _haproxy() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise AlbError("haproxy is not installed (Debian/Ubuntu: apt-get install haproxy)")
    return found


def _children(pid: int) -> set[int]:
    """The master's workers: the processes whose parent it is."""
    found: set[int] = set()
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()  # the name may hold spaces and ")"
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.add(int(stat.split("/")[2]))
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
