"""The local stand-in and its PostgreSQL pair for the self-tests, and a client that probes through the ALB."""
from __future__ import annotations

import http.cookiejar
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from harness.util.net import free_port
from support.ports import port_offset
from support.suites import ROOT


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
def stand_in(prefix: str, env: str, time_scale: float = 1.0) -> Iterator[Any]:
    """A stand-in of the plan's `env` of its own (harness.local.stand_in.StandIn), its ports shifted by
    a block no other test process holds (support.ports), brought up and afterwards down, by PID. Under /tmp, not pytest's tmp_path: PostgreSQL
    runs as its own user and needs traversable parents and a short path (socket names)."""
    from harness.local.stand_in import Ports, StandIn

    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    with port_offset() as offset:
        plane = StandIn(root, ROOT / "plan" / "dougust.toml", env, f"http://127.0.0.1:{free_port()}",
                        Ports().offset(offset), time_scale=time_scale)
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
