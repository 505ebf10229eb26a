"""The simulated users of a load run, following the smoke API contract (docs/design.md).

Each user logs in once with an account of the pool, keeps its token fresh (ahead of a JWT's `exp`, or on
an interval for opaque tokens, and after any 401), then repeats journeys picked by the mix's weights.
Every journey is one request, so with a target rate each arrival of the open model is one request: the
user keeps a schedule of intended starts and the request carries its intended start for the
coordinated-omission corrected histogram (harness.load.exact). Requests are named by route template so
statistics group per endpoint. The settings the users share are a Pool on the Environment, made at each
test start.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import gevent
import gevent.ssl
from locust import FastHttpUser, constant, task
from locust.env import Environment
from locust.event import Events
from locust.runners import WorkerRunner

from harness.load.credentials import usable_accounts
from harness.load.generator.state import run_of
from harness.load.tokens import refresh_due_at
from harness.plan import JOURNEYS

DEFAULT_MIX = {"health": 1, "me": 1, "browse": 6, "write": 2}  # weights of JOURNEYS when --mix is not given
NOTE_IDS_KEPT = 50
POOL = "harness_pool"  # the Environment attribute holding its Pool


@dataclass
class Pool:
    """What the users of one test share: the accounts, handed out in turn, and the mix they pick from."""
    accounts: list[dict[str, str]]
    turn: Iterator[int]
    mix: dict[str, float]
    user_interval_s: float
    refresh_interval_s: float
    names: list[str] = field(init=False)  # the mix as cumulative weights, built once per test
    cumulative: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.names = list(self.mix)
        self.cumulative = list(itertools.accumulate(self.mix.values()))

    @property
    def logs_in(self) -> bool:
        return bool(set(self.mix) - {"health"})  # the health journey needs no account

    def pick(self) -> str:
        """A journey by the mix's weights (as random.choices picks, without the list it builds each time:
        at thousands of requests per second that list cost the generator 2 % of its throughput)."""
        if len(self.names) == 1:
            return self.names[0]
        return self.names[bisect.bisect(self.cumulative, random.random() * self.cumulative[-1], 0, len(self.names) - 1)]


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
    unknown = set(mix) - set(JOURNEYS)
    if unknown or not any(w > 0 for w in mix.values()):
        raise ValueError(f"mix {text!r}: journeys are {sorted(JOURNEYS)}, with at least one positive weight")
    return {name: float(weight) for name, weight in mix.items() if weight > 0}


def load_accounts(path: str) -> list[dict[str, str]]:
    accounts = usable_accounts(json.loads(Path(path).read_text())) if path else None
    if accounts is None:
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


def refuse_unusable_options(environment: Environment, **_: Any) -> None:
    """Before any user starts, on the master or a standalone process (a worker gets the master's options
    with the test): options the journeys cannot run with end Locust with one line, not a traceback per user."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    why = refusal(environment.parsed_options)
    if why:
        logging.getLogger(__name__).error(why)
        sys.exit(1)


def configure(environment: Environment, **_: Any) -> None:
    """At each test start: the users' Pool, from the options (a worker's come from its master)."""
    options = environment.parsed_options
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):
        # Only the master knows the total user count; the per-user interval reaches workers with the options.
        rate = float(options.rate_per_s or 0.0)
        options.load_user_interval_s = options.num_users / rate if rate > 0 else 0.0
    mix = parse_mix(options.mix)
    setattr(environment, POOL, Pool(
        accounts=load_accounts(options.accounts_file) if set(mix) - {"health"} else [{}],
        turn=itertools.count(getattr(runner, "worker_index", 0) or 0), mix=mix,
        user_interval_s=float(getattr(options, "load_user_interval_s", 0.0) or 0.0),
        refresh_interval_s=float(options.refresh_interval_s)))


def pool_of(environment: Environment) -> Pool:
    """The Pool `configure` put on this environment at the test's start."""
    return getattr(environment, POOL)


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

    def __init__(self, environment: Environment) -> None:
        options = environment.parsed_options
        self.ssl_context_factory = functools.partial(trusting, getattr(options, "ca_bundle", "") or None)
        super().__init__(environment)

    def on_start(self) -> None:
        self.pool = pool_of(self.environment)
        self.measured = run_of(self.environment)
        self.account = self.pool.accounts[next(self.pool.turn) % len(self.pool.accounts)]
        interval_s = self.pool.user_interval_s
        self.schedule = Schedule(interval_s) if interval_s > 0 else None
        self.journeys: dict[str, Callable[[float | None], None]] = {
            "health": self.health, "me": self.me, "browse": self.browse, "write": self.write}
        self.note_ids: list[int] = []
        self.access = self.refresh_token = ""
        self.refresh_at = 0.0
        if self.pool.logs_in:
            self.login()

    @task
    def journey(self) -> None:
        if time.time() >= self.measured.window_end:
            gevent.sleep(0.5)  # the measurement is over: let the requests in flight finish and be reported
            return
        intended = self.schedule.wait() if self.schedule else None
        if self.access and time.time() >= self.refresh_at:
            self.refresh()
        self.journeys[self.pool.pick()](intended)

    def keep_tokens(self, response: Any) -> bool:
        try:
            body = response.json()
            access, refresh = body["accessToken"], body["refreshToken"]
        except (ValueError, KeyError, TypeError):
            return False
        if not isinstance(access, str) or not isinstance(refresh, str):
            return False
        self.access, self.refresh_token = access, refresh
        self.refresh_at = refresh_due_at(access, time.time(), self.pool.refresh_interval_s)
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


def add_listeners(events: Events) -> None:
    """Register the journeys' options and start-up checks with a Locust process's events (its locustfile
    does, at import)."""
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(refuse_unusable_options)
    events.test_start.add_listener(configure)
