"""The local stand-in of the running system, driven by what is provisioned in the emulator.

`up` brings up, when none of it runs: the emulator (moto's server, a process of its own, unless one
listens already), the plan's environment in it, PostgreSQL primary + synchronous standby (RDS Multi-AZ), the
DATABASE_URL secret pointing at them (as the real secret points at RDS), the service's tasks (the ECS agent
stand-in runs the service's desired count of them from the task definition and Secrets Manager, and applies
the provisioned CPU target-tracking policy), a smoke account, and HAProxy as the ALB with a certificate from
a local CA. A stand-in that runs is used as it is found: `up` changes nothing in it (no provisioning, no
setting reset, no standby re-attached, no restart), so a suite judges what it finds. One that runs only in
part is refused, naming what is down; `up(repair=True)` (`harness local up --repair`) starts what is
missing and makes the pair Multi-AZ again. `down` stops everything it started, by PID. Nothing here runs
against AWS.

`time_scale` multiplies every period of the scaling policy (datapoints, cooldowns; see
harness/local/autoscale.py): 1.0 is AWS's timing, 0.05 makes a 300 s cooldown 15 s. A running stand-in
keeps the factor it was started with; `status()["tasks"]["time_scale"]` says which, so a caller can scale
its own waits by it.

The parts a caller uses (plan, target, database, alb, urls, ca_file) are values made once with the
StandIn; what reads or changes the running system (task_state, status, up, down) is a method.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import psycopg
import requests

from harness.local.alb import Alb, AlbConfig, AlbError, admin_socket
from harness.local.app import hash_password
from harness.local.ecs_agent.state import TaskState
from harness.local.postgres import DatabaseConfig, PostgresPair
from harness.util.proc import process_alive
from harness.local.provision import provision
from harness.local.tls import ensure_certificates
from harness.plan import Plan, load_plan
from harness.target import Target, endpoint_listening
from harness.util.wait import WaitTimeout, until

SMOKE_EMAIL = "smoke@dougust.local"
WAIT_S = 30.0
TERMINATE_S = 15.0  # SIGTERM to a process the stand-in started, then this long before SIGKILL


class StandInError(Exception):
    """The stand-in could not be brought up; the message names the part and where its log is."""


class StandInRefused(StandInError):
    """`up` would have to change a stand-in that runs (in part, or another environment's): it changed
    nothing and stopped nothing; the message names what is wrong and the command that fixes it."""


@dataclass(frozen=True)
class Ports:
    """Fixed, documented defaults; `offset` shifts them all so several stand-ins can run side by side. One
    task slot per task the scalable target allows at most (ECS-11: 10); the service's desired count of
    them run."""

    db_primary: int = 15432
    db_standby: int = 15433
    tasks: tuple[int, ...] = tuple(range(13001, 13011))
    admin: tuple[int, ...] = tuple(range(13101, 13111))
    http: int = 18080
    https: int = 18443
    stats: int = 18404

    def offset(self, by: int) -> Ports:
        return Ports(self.db_primary + by, self.db_standby + by, tuple(p + by for p in self.tasks),
                     tuple(p + by for p in self.admin), self.http + by, self.https + by, self.stats + by)


@dataclass(frozen=True)
class AlbVariant:
    """How the ALB stand-in deviates from the plan, for the self-tests: all defaults is the plan's ALB."""

    redirect: bool = True
    stickiness: bool = True
    certificate_host: str | None = None  # None: the stand-in's own host name
    certificate_days: int = 365


@dataclass
class StandIn:
    root: Path
    plan_path: Path
    env: str
    endpoint_url: str
    ports: Ports = field(default_factory=Ports)
    host: str = "localhost"
    alb_variant: AlbVariant = field(default_factory=AlbVariant)
    time_scale: float = 1.0  # factor on the scaling policy's periods, for the supervisor this plane starts
    plan: Plan = field(init=False, repr=False, compare=False)
    target: Target = field(init=False, repr=False, compare=False)  # its emulator, the plan's region
    database: PostgresPair = field(init=False, repr=False, compare=False)
    alb: Alb = field(init=False, repr=False, compare=False)  # HAProxy as last started (_start_alb)
    urls: dict[str, str] = field(init=False, repr=False, compare=False)
    ca_file: Path = field(init=False, repr=False, compare=False)  # what a client passes as --ca-bundle

    def __post_init__(self) -> None:
        self.plan = load_plan(self.plan_path)
        self.target = Target("localstack", self.plan.environment(self.env).region, endpoint_url=self.endpoint_url)
        self.database = self._pair()
        # Every task slot is a backend. The certificate and which slots start out of the target group are
        # settled when HAProxy is started (_start_alb); finding, inspecting and stopping it needs neither.
        backends = tuple((f"task-{i + 1}", p) for i, p in enumerate(self.ports.tasks))
        self.alb = Alb(AlbConfig(self.root, self.ports.http, self.ports.https, self.ports.stats, backends,
                                 certificate=self.root / "tls" / "server.pem", redirect=self.alb_variant.redirect,
                                 stickiness=self.alb_variant.stickiness))
        self.urls = {"https": f"https://{self.host}:{self.ports.https}", "http": f"http://{self.host}:{self.ports.http}",
                     "stats": f"http://127.0.0.1:{self.ports.stats}/", "emulator": self.endpoint_url}
        self.ca_file = self.root / "tls" / "ca.pem"

    @classmethod
    def for_project(cls, project: Path, plan_path: Path, env: str, endpoint_url: str, port_offset: int = 0,
                    time_scale: float = 1.0) -> StandIn:
        return cls(project / ".stand-in", plan_path, env, endpoint_url, Ports().offset(port_offset),
                   time_scale=time_scale)

    @classmethod
    def attach(cls, root: Path, plan_path: Path) -> StandIn:
        """The stand-in whose state is in `root`, as its `up` recorded it (environment, emulator, ports)."""
        marker = root / "stand-in.json"
        try:
            recorded = json.loads(marker.read_text())
            ports = Ports(**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded["ports"].items()})
            env, endpoint, time_scale = recorded["env"], recorded["endpoint"], float(recorded.get("time_scale", 1.0))
        except (OSError, ValueError, KeyError, TypeError):
            raise StandInError(f"{root} holds no stand-in brought up by this version ({marker} missing or old); "
                               f"bring one up there with 'harness local up'") from None
        return cls(root, plan_path, env, endpoint, ports, time_scale=time_scale)

    # -- parts ----------------------------------------------------------------------------------------------

    def _start_alb(self) -> None:
        """Start HAProxy (or reload it) as the variant says, with the certificate it asks for (issued when the
        one on disk is not that) and the slots whose task the supervisor has not registered disabled (the
        supervisor keeps HAProxy's registrations up to date after that)."""
        variant = self.alb_variant
        certificate = ensure_certificates(self.root / "tls", variant.certificate_host or self.host,
                                          days=variant.certificate_days)
        registered = {t.task for t in TaskState.read(self.root).tasks if t.registered}
        config = self.alb.config
        self.alb = Alb(replace(config, certificate=certificate.server_pem, deregistered=frozenset(
            name for name, _ in config.backends if name not in registered)))
        self.alb.start()

    def _pair(self) -> PostgresPair:
        """The PostgreSQL pair; where its state lives depends on whether the root is traversable."""
        return PostgresPair(DatabaseConfig(self.root, self._secret_file("db-password"), self.ports.db_primary,
                                           self.ports.db_standby))

    def _secret_file(self, name: str) -> str:
        """A value made once and kept, owner-readable only, under the state dir."""
        path = self.root / "secrets" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip()

    def _pid(self, name: str) -> int | None:
        path = self.root / f"{name}.pid"
        if not path.exists():
            return None
        pid = int(path.read_text().strip() or 0)
        return pid if pid and process_alive(pid) else None

    def _spawn(self, name: str, argv: list[str]) -> int:
        log = open(self.root / f"{name}.log", "ab")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=self.root)
        log.close()
        (self.root / f"{name}.pid").write_text(str(process.pid))
        return process.pid

    # -- up -------------------------------------------------------------------------------------------------

    def parts_running(self) -> dict[str, bool]:
        """Which parts of the stand-in run, read without changing any: the emulator, each PostgreSQL node,
        the ECS agent stand-in (the task supervisor) and HAProxy."""
        alb = self.alb
        try:
            alb_running = bool(alb.status().get("running"))
        except AlbError:
            alb_running = True  # its master runs, though its stats do not answer
        nodes = self.database.status()
        return {"emulator": endpoint_listening(self.endpoint_url),
                **{f"PostgreSQL node '{node}' ({entry['role']})": entry["running"] for node, entry in nodes.items()},
                "ECS agent stand-in": self._pid("tasks") is not None, "HAProxy": alb_running}

    def up(self, repair: bool = False) -> bool:
        """Bring the stand-in up when none of it runs; True when this call started anything (the caller then
        owns `down`). When it all runs, change nothing and return False: it is used as it is found. When it
        runs in part, raise StandInRefused naming what is down, unless `repair`: then start what is missing
        and re-attach or rebuild the standby, resetting what was set outside the stand-in (ALTER SYSTEM)."""
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / "stand-in.json"
        running_env = json.loads(marker.read_text()).get("env") if marker.exists() else None
        if running_env not in (None, self.env) and (self._pid("tasks") or self.alb.status().get("running")):
            raise StandInRefused(f"the stand-in in {self.root} runs environment '{running_env}'; "
                                 f"run 'harness local down' first, or use --env {running_env}")
        supervisor, written = self._pid("tasks"), TaskState.read(self.root)
        if supervisor is not None and written.supervisor == supervisor and written.slots is None:
            raise StandInRefused(f"the stand-in's ECS agent (pid {supervisor}) predates task scaling; "
                                 "run 'harness local down', then 'up' again")
        parts = self.parts_running()
        down = [name for name, running in parts.items() if not running]
        if not repair and not down:
            return False  # used as it is found
        if not repair and any(running for name, running in parts.items() if name != "emulator"):
            raise StandInRefused(
                f"the stand-in in {self.root} runs in part ({', '.join(down)} down); it is not changed without "
                "asking: run 'harness local up --repair' to start what is down and re-attach the standby, or "
                "'harness local down' to start afresh")
        self.root.chmod(0o755)  # the database runs as another user and must reach its directory
        self.database = self._pair()
        marker.write_text(json.dumps({"env": self.env, "endpoint": self.endpoint_url, "ports": asdict(self.ports),
                                      "time_scale": self.time_scale}))
        started = False
        if not endpoint_listening(self.endpoint_url):
            port = self.endpoint_url.rsplit(":", 1)[1].rstrip("/")
            self._spawn("emulator", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port])
            self._wait(lambda: endpoint_listening(self.endpoint_url), "emulator", "emulator.log")
            started = True
        plan, target = self.plan, self.target
        provision(target.client, plan, self.env)
        database = self.database
        if not all(n["running"] for n in database.status().values()):
            started = True
        try:
            database.start()
        except RuntimeError as exc:
            raise StandInError(f"PostgreSQL: {exc}") from None
        self._put_secret(target, plan.secret_prefix(self.env) + plan.requirements["DB-13"].expected(self.env)["secret"],
                         database.dsn())
        account = self._smoke_account(target, plan)
        if self._pid("tasks") is None:
            self._spawn("tasks", [sys.executable, "-m", "harness.local.ecs_agent.supervisor", "--state", str(self.root),
                                  "--endpoint-url", self.endpoint_url, "--plan", str(self.plan_path.resolve()),
                                  "--env", self.env, "--ports", ",".join(map(str, self.ports.tasks)),
                                  "--admin-ports", ",".join(map(str, self.ports.admin)),
                                  "--alb-socket", str(admin_socket(self.root)), "--time-scale", str(self.time_scale)])
            started = True
        self._wait(self._tasks_serving, "tasks", "tasks.log and task-*.log")
        self._register(account, database)
        if not self.alb.status().get("running"):
            started = True
        try:
            self._start_alb()
        except AlbError as exc:
            raise StandInError(f"HAProxy: {exc}") from None
        self._wait(lambda: all(s == "UP" for s in self.alb.status().get("servers", {}).values())
                   and bool(self.alb.status().get("servers")), "load balancer", "haproxy/")
        return started

    def _wait(self, ready: Callable[[], bool], what: str, log: str) -> None:
        try:
            until(ready, WAIT_S, what)
        except WaitTimeout:
            raise StandInError(f"the {what} of the stand-in did not come up within {WAIT_S:.0f} s; "
                               f"see {self.root / log}") from None

    def _tasks_serving(self) -> bool:
        """The running supervisor has the service's desired count of tasks up and registered."""
        state = TaskState.read(self.root)
        return (state.supervisor is not None and state.supervisor == self._pid("tasks") and bool(state.tasks)
                and state.desired is not None and state.slots is not None
                and len(state.tasks) == min(state.desired, state.slots) and all(t.registered for t in state.tasks))

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    @staticmethod
    def _put_secret(target: Target, name: str, value: str) -> None:
        sm = target.client("secretsmanager")
        if sm.get_secret_value(SecretId=name)["SecretString"] != value:
            sm.put_secret_value(SecretId=name, SecretString=value)

    def _smoke_account(self, target: Target, plan: Plan) -> dict[str, str]:
        """The smoke account lives in the secret the plan names, as the team keeps it on AWS; its password
        is kept with the database it is registered in, so a fresh emulator does not orphan it."""
        sm = target.client("secretsmanager")
        name = plan.secret_prefix(self.env) + plan.requirements["SMK-06"].expected(self.env)["account_secret"]
        account = {"email": SMOKE_EMAIL, "password": self._secret_file("smoke-password")}
        try:
            self._put_secret(target, name, json.dumps(account))
        except sm.exceptions.ResourceNotFoundException:
            sm.create_secret(Name=name, SecretString=json.dumps(account),
                             Tags=[{"Key": k, "Value": v} for k, v in plan.tags(self.env).items()])
        return account

    def _register(self, account: dict[str, str], database: PostgresPair) -> None:
        """Register the smoke account through the API; if it exists, give it the secret's password."""
        port = next(t.port for t in TaskState.read(self.root).tasks if t.registered)
        url = f"http://127.0.0.1:{port}/api/auth/register"
        try:
            response = requests.post(url, json=account, timeout=10)
        except requests.RequestException as exc:
            raise StandInError(f"registering the smoke account failed: {url} did not answer ({exc})") from None
        if response.status_code == 409:
            with psycopg.connect(database.dsn()) as conn:
                conn.execute("UPDATE users SET password_hash = %s WHERE email = %s",
                             (hash_password(account["password"]), account["email"]))
        elif response.status_code != 201:
            raise StandInError(f"registering the smoke account failed: {response.status_code} {response.text[:200]}")

    # -- faults, variants -----------------------------------------------------------------------------------

    def set_faults(self, **faults: Any) -> None:
        """Switch faults on in every task of the service (harness/local/app.py FAULTS); no argument clears
        them. A fault lives in its task's process: a task started later (scale-out, restart, deploy) has none."""
        for task in TaskState.read(self.root).tasks:
            if task.draining:
                continue
            url = f"http://127.0.0.1:{task.admin_port}/faults"
            # A task the supervisor has just restarted may not listen yet; one it is scaling in never will.
            self._wait(lambda: self._healthy(url) or not self._in_service(task.task), "task admin port",
                       "task-*.log")
            try:
                response = requests.post(url, json=faults, timeout=5) if faults else requests.delete(url, timeout=5)
            except requests.RequestException:
                if self._in_service(task.task):
                    raise
                continue
            response.raise_for_status()

    def _in_service(self, name: str) -> bool:
        return any(t.task == name and not t.draining for t in TaskState.read(self.root).tasks)

    def with_alb(self, variant: AlbVariant) -> StandIn:
        """The same stand-in with its ALB reconfigured (restarted) as `variant` says."""
        plane = replace(self, alb_variant=variant)
        plane._start_alb()
        plane._wait(lambda: all(s == "UP" for s in plane.alb.status().get("servers", {}).values()),
                    "load balancer", "haproxy/")
        return plane

    # -- down, status ---------------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop everything the stand-in started, by PID; the emulator only if the stand-in started it. A
        database kept outside the project is removed too, so nothing stays behind there; it is disposable:
        the next `up` initialises a fresh pair and registers the smoke account again."""
        self.alb.stop()
        self._terminate("tasks")
        for task in TaskState.read(self.root).tasks:
            if task.pid and process_alive(task.pid):
                os.kill(task.pid, signal.SIGTERM)
        database = self.database
        database.sweep_restores(float("inf"))  # a restore drill's temporary servers go with the stand-in
        database.stop()
        if database.relocated:
            shutil.rmtree(database.state)
        self._terminate("emulator")

    def _terminate(self, name: str) -> None:
        pid = self._pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            try:
                until(lambda: not process_alive(pid), TERMINATE_S, f"{name} (pid {pid}) to exit")
            except WaitTimeout:
                os.kill(pid, signal.SIGKILL)
        (self.root / f"{name}.pid").unlink(missing_ok=True)

    def task_state(self) -> TaskState | None:
        """What the running ECS agent stand-in last wrote (its tasks, the service's desired count, its
        deployment and scaling); None while no agent runs."""
        return TaskState.read(self.root) if self._pid("tasks") else None

    def service_cpu(self) -> float | None:
        """The service's average CPU in its latest complete datapoint, in % of the tasks' reservation: what
        the scaling policy judges, as CloudWatch's AWS/ECS CPUUtilization is on AWS; None without one."""
        state = self.task_state()
        if state is None:
            return None
        datapoints = (state.scaling.datapoints if state.scaling else None) or [None]
        return datapoints[-1]

    def status(self) -> dict[str, Any]:
        """What runs. Under "tasks": the supervisor's PID, its tasks, the service's desired count, the
        time scale it runs with (this plane's own when none runs) and its scaling policy, datapoints and
        actions (each: at, from, to, metric, reason)."""
        supervisor = self._pid("tasks")
        state = (TaskState.read(self.root) if supervisor else TaskState()).to_json()
        tasks = {"supervisor": supervisor, "tasks": state["tasks"], "desired": state["desired"],
                 "slots": len(self.ports.tasks),
                 "time_scale": self.time_scale if state["time_scale"] is None else state["time_scale"],
                 "scaling": state["scaling"]}
        return {
            "emulator": {"listening": endpoint_listening(self.endpoint_url), "pid": self._pid("emulator"),
                         "url": self.endpoint_url},
            "database": self.database.status(),
            "tasks": tasks,
            "load_balancer": self.alb.status(),
            "urls": self.urls,
            "ca_file": str(self.ca_file),
        }
