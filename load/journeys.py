"""The simulated users of a load run, following the smoke API contract (docs/design.md).

Each user logs in once with an account of the pool, keeps its token fresh (ahead of a JWT's `exp`, or on
an interval for opaque tokens, and after any 401), then repeats journeys picked by the mix's weights.
Every journey is one request, so with a target rate each arrival of the open model is one request: the
user keeps a schedule of intended starts and the request carries its intended start for the
coordinated-omission corrected histogram (harness.load.exact). Requests are named by route template so
statistics group per endpoint.
"""
from __future__ import annotations

import bisect
import functools
import itertools
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import gevent
import gevent.ssl
from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

import exact_stats
from harness.load.tokens import refresh_due_at

DEFAULT_MIX = {"health": 1, "me": 1, "browse": 6, "write": 2}
NOTE_IDS_KEPT = 50


class Pool:
    """Accounts handed to users in turn, and the mix they share; set up at each test start."""
    accounts: list[dict[str, str]] = []
    turn = itertools.count()
    mix: dict[str, float] = dict(DEFAULT_MIX)
    names: list[str] = list(DEFAULT_MIX)  # the mix as cumulative weights, built once per test
    cumulative: list[float] = list(itertools.accumulate(DEFAULT_MIX.values()))
    user_interval_s = 0.0
    refresh_interval_s = 300.0

    @classmethod
    def pick(cls) -> str:
        """A journey by the mix's weights (as random.choices picks, without the list it builds each time:
        at thousands of requests per second that list cost the generator 2 % of its throughput)."""
        if len(cls.names) == 1:
            return cls.names[0]
        return cls.names[bisect.bisect(cls.cumulative, random.random() * cls.cumulative[-1], 0, len(cls.names) - 1)]


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("journeys")
    group.add_argument("--accounts-file", default="", env_var="HARNESS_LOAD_ACCOUNTS",
                       help='JSON list of {"email", "password"}; each user logs in with one of them')
    group.add_argument("--mix", default="", env_var="HARNESS_LOAD_MIX",
                       help=f"journey weights as JSON, default {json.dumps(DEFAULT_MIX)}")
    group.add_argument("--rate-per-s", type=float, default=0.0, env_var="HARNESS_LOAD_RATE_PER_S",
                       help="total arrival rate across users (open model); 0 runs each user as fast as it goes")
    group.add_argument("--refresh-interval-s", type=float, default=300.0, env_var="HARNESS_LOAD_REFRESH_S",
                       help="refresh interval for tokens that are not JWTs (a JWT is refreshed ahead of its exp)")
    group.add_argument("--ca-bundle", default="", env_var="HARNESS_LOAD_CA_BUNDLE",
                       help="PEM bundle to verify the target's certificate with (a private CA)")


def parse_mix(text: str) -> dict[str, float]:
    mix = json.loads(text) if text else dict(DEFAULT_MIX)
    unknown = set(mix) - set(DEFAULT_MIX)
    if unknown or not any(w > 0 for w in mix.values()):
        raise ValueError(f"mix {text!r}: journeys are {sorted(DEFAULT_MIX)}, with at least one positive weight")
    return {name: float(weight) for name, weight in mix.items() if weight > 0}


def load_accounts(path: str) -> list[dict[str, str]]:
    accounts = json.loads(Path(path).read_text()) if path else []
    if not accounts or not all(isinstance(a, dict) and a.get("email") and a.get("password") for a in accounts):
        raise ValueError(f"accounts file {path!r}: need a JSON list of {{\"email\", \"password\"}}")
    return accounts


def refusal(options: Any) -> str | None:
    """Why the journeys cannot run with these options (one line naming the fix), or None."""
    try:
        mix = parse_mix(options.mix)
    except (ValueError, TypeError, AttributeError) as exc:
        return f"--mix {options.mix!r} is not a JSON object of journey weights ({exc}); e.g. --mix '{{\"health\": 1}}'"
    needing = sorted(set(mix) - {"health"})
    if not needing:
        return None  # the health journey logs in nowhere
    if not options.accounts_file:
        return (f"no --accounts-file: the journeys {', '.join(needing)} log in; give --accounts-file FILE (a JSON "
                f'list of {{"email", "password"}}), or --mix \'{{"health": 1}}\' for the health journey alone')
    try:
        load_accounts(options.accounts_file)
    except (OSError, ValueError) as exc:
        return f"--accounts-file {options.accounts_file}: {exc}"
    return None


@events.init.add_listener
def refuse_unusable_options(environment: Environment, **_: Any) -> None:
    """Before any user starts, on the master or a standalone process (a worker gets the master's options
    with the test): options the journeys cannot run with end Locust with one line, not a traceback per user."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    why = refusal(environment.parsed_options)
    if why:
        logging.getLogger(__name__).error(why)
        sys.exit(1)


@events.test_start.add_listener
def configure(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):
        # Only the master knows the total user count; the per-user interval reaches workers with the options.
        rate = float(options.rate_per_s or 0.0)
        options.load_user_interval_s = options.num_users / rate if rate > 0 else 0.0
    Pool.user_interval_s = float(getattr(options, "load_user_interval_s", 0.0) or 0.0)
    Pool.refresh_interval_s = float(options.refresh_interval_s)
    Pool.mix = parse_mix(options.mix)
    Pool.names = list(Pool.mix)
    Pool.cumulative = list(itertools.accumulate(Pool.mix.values()))
    Pool.accounts = load_accounts(options.accounts_file) if set(Pool.mix) - {"health"} else [{}]
    Pool.turn = itertools.count(getattr(runner, "worker_index", 0) or 0)
    ApiUser.ssl_context_factory = staticmethod(functools.partial(trusting, options.ca_bundle or None))


def trusting(ca_bundle: str | None, cafile: str | None = None, **_: Any) -> gevent.ssl.SSLContext:
    """The client's TLS context: the given CA bundle (a private CA) in place of the default trust store.
    geventhttpclient passes its own `cafile`, which must not win over the operator's bundle."""
    return gevent.ssl.create_default_context(cafile=ca_bundle or cafile)


class Schedule:
    """Intended start times of one user's arrivals, interval_s apart (a paced run's users only).

    A user that falls behind keeps its schedule and catches up without sleeping, as wrk2 and k6 do, so
    the time a slow response held it up is charged to the requests that waited."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.next: float | None = None

    def wait(self) -> float:
        now = time.time()
        if self.next is None:
            # Users start together; a random phase spreads their arrivals over the interval.
            self.next = now + random.uniform(0, self.interval_s)
        intended = self.next
        self.next += self.interval_s
        if intended > now:
            gevent.sleep(intended - now)
        return intended


class ApiUser(FastHttpUser):
    # Pacing is the schedule's job; without a rate the user is a closed-model loop.
    wait_time = constant(0)
    # Locust's FastHttpUser does not verify certificates by default; the harness always does.
    insecure = False

    def on_start(self) -> None:
        self.account = Pool.accounts[next(Pool.turn) % len(Pool.accounts)]
        self.schedule = Schedule(Pool.user_interval_s) if Pool.user_interval_s > 0 else None
        self.journeys: dict[str, Callable[[float | None], None]] = {
            "health": self.health, "me": self.me, "browse": self.browse, "write": self.write}
        self.note_ids: list[int] = []
        self.access = self.refresh_token = ""
        self.refresh_at = 0.0
        if set(Pool.mix) - {"health"}:  # the health journey needs no account
            self.login()

    @task
    def journey(self) -> None:
        if time.time() >= exact_stats.run.window_end:
            gevent.sleep(0.5)  # the measurement is over: let the requests in flight finish and be reported
            return
        intended = self.schedule.wait() if self.schedule else None
        if self.access and time.time() >= self.refresh_at:
            self.refresh()
        self.journeys[Pool.pick()](intended)

    def keep_tokens(self, response: Any) -> bool:
        try:
            body = response.json()
            access, refresh = body["accessToken"], body["refreshToken"]
        except (ValueError, KeyError, TypeError):
            return False
        if not isinstance(access, str) or not isinstance(refresh, str):
            return False
        self.access, self.refresh_token = access, refresh
        self.refresh_at = refresh_due_at(access, time.time(), Pool.refresh_interval_s)
        return True

    def login(self) -> None:
        with self.client.post("/api/auth/login", json=self.account, name="POST /api/auth/login",
                              catch_response=True) as response:
            if response.status_code not in (200, 201) or not self.keep_tokens(response):
                self.access = ""
                response.failure(f"login answered {response.status_code} without tokens")

    def refresh(self) -> None:
        with self.client.post("/api/auth/refresh", json={"refreshToken": self.refresh_token},
                              name="POST /api/auth/refresh", catch_response=True) as response:
            if response.status_code in (200, 201) and self.keep_tokens(response):
                return
            response.failure(f"refresh answered {response.status_code} without tokens")
        self.login()

    def call(self, method: str, path: str, name: str, intended: float | None, **kwargs: Any) -> Any:
        context = {"intended_start": intended} if intended is not None else {}
        response = self.client.request(method, path, name=name, context=context,
                                       headers={"Authorization": f"Bearer {self.access}"}, **kwargs)
        if response.status_code == 401:
            self.refresh()
        return response

    def keep_ids(self, found: Any) -> None:
        items = found if isinstance(found, list) else [found]
        self.note_ids.extend(n["id"] for n in items if isinstance(n, dict) and isinstance(n.get("id"), int))
        del self.note_ids[:-NOTE_IDS_KEPT]

    def health(self, intended: float | None) -> None:
        context = {"intended_start": intended} if intended is not None else {}
        self.client.get("/api/health", name="GET /api/health", context=context)

    def me(self, intended: float | None) -> None:
        self.call("GET", "/api/auth/me", "GET /api/auth/me", intended)

    def browse(self, intended: float | None) -> None:
        if self.note_ids and random.random() < 0.5:
            self.call("GET", f"/api/notes/{random.choice(self.note_ids)}", "GET /api/notes/:id", intended)
            return
        response = self.call("GET", "/api/notes", "GET /api/notes", intended)
        if response.status_code == 200:
            self.keep_ids(response.json())

    def write(self, intended: float | None) -> None:
        response = self.call("POST", "/api/notes", "POST /api/notes", intended,
                             json={"title": f"load {random.getrandbits(32):08x}", "body": "written by the load run"})
        if response.status_code in (200, 201):
            self.keep_ids(response.json())
