"""The smoke gate against the local stand-in, run as the deploy pipeline runs it (`pytest smoke --base-url
... --expect-version ...`): the healthy stand-in passes; each fault fails its SMK check and no other; a
rollout that converges within --deadline passes; one that does not fails with what was last seen.
"""
from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import suppress
from pathlib import Path
from typing import Iterator

import pytest
import requests

from harness.util.net import free_port

from support.stand_in import stand_in

from support.suites import ROOT, SuiteRun, run_suite
from harness.util.proc import process_alive
from harness.local.ecs_agent.state import TaskState
from harness.local.stand_in import SMOKE_EMAIL, AlbVariant, StandIn, StandInError
from harness.target import endpoint_listening
from harness.util.wait import WaitTimeout, until

pytestmark = pytest.mark.stand_in



@pytest.fixture(scope="module")
def plane() -> Iterator[StandIn]:
    with stand_in("dg-", "prod") as plane:
        yield plane


@pytest.fixture(autouse=True)
def no_faults(plane: StandIn) -> Iterator[None]:
    plane.set_faults()
    yield
    plane.set_faults()


def gate(plane: StandIn, tmp_path: Path, *extra: str, version: str = "latest") -> SuiteRun:
    password = (plane.root / "secrets" / "smoke-password").read_text().strip()
    return run_suite("--base-url", plane.urls["https"], "--http-url", plane.urls["http"],
                     "--ca-bundle", str(plane.ca_file), "--stand-in", str(plane.root), "--expect-version", version,
                     "--smoke-user", SMOKE_EMAIL, f"--smoke-password={password}", *extra,
                     suite="smoke", reports=tmp_path / "reports")


def failing(run: SuiteRun) -> set[str]:
    return run.ids_with("fail", "error")


def test_healthy_stand_in_passes_the_gate(plane, tmp_path):
    run = gate(plane, tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.summary["counts"]["pass"] == 10 and run.summary["uncovered"] == []
    assert run.summary["gate"]["rounds"] == [{"at_s": run.summary["gate"]["rounds"][0]["at_s"], "failing": []}]


FAULTS = {
    "health reports the database down": ({"health_down": True}, "SMK-01", "/api/health answered 503"),
    "slow responses": ({"slow_ms": 600}, "SMK-05", "the budget is 500 ms"),
    "an old version answers": ({"version": "0.9.0"}, "SMK-08", "not version latest"),
    "a forged token is accepted": ({"accept_forged": True}, "SMK-06", "forged token"),
    "refresh is broken": ({"refresh_broken": True}, "SMK-06", "refresh: POST"),
    "404 answered as 500": ({"not_found_as": "500"}, "SMK-09", "answered 500, not 404"),
    "404 answered as HTML": ({"not_found_as": "html"}, "SMK-09", "without the JSON error body"),
    "security headers dropped": ({"insecure_headers": True}, "SMK-04", "X-Powered-By present"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_fails_its_check_alone(plane, fault, tmp_path):
    switches, rid, seen = FAULTS[fault]
    plane.set_faults(**switches)
    if switches.get("health_down"):
        # Judge the settled state (every target unhealthy, the ALB failing open), not the seconds in which
        # the health checks take the tasks out one by one.
        with suppress(WaitTimeout):
            until(lambda: set(plane.alb.status()["servers"].values()) == {"DOWN"}, 10, "every target DOWN")
    run = gate(plane, tmp_path)
    assert run.returncode == 1
    assert failing(run) == {rid}, run.summary["counts"]
    assert seen in run.message(rid), run.message(rid)


VARIANTS = {
    "HTTP does not redirect": (AlbVariant(redirect=False), "SMK-02", "not a redirect"),
    "no stickiness cookie": (AlbVariant(stickiness=False), "SMK-07", "no AWSALB cookie was set"),
    "certificate expires in 3 days": (AlbVariant(certificate_days=3), "SMK-03", "the margin is 14 days"),
    "certificate for another host": (AlbVariant(certificate_host="wrong.example"), "SMK-03", "Hostname mismatch"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_load_balancer_variant_fails_its_check_alone(plane, variant, tmp_path):
    alb, rid, seen = VARIANTS[variant]
    try:
        plane.with_alb(alb)
        run = gate(plane, tmp_path)
    finally:
        plane.with_alb(AlbVariant())
    assert run.returncode == 1, run.stdout[-3000:]  # a red gate blocks the release
    assert failing(run) == {rid}, run.summary["counts"]
    assert seen in run.message(rid), run.message(rid)


def _deploy(plane: StandIn, tag: str) -> str:
    """What the pipeline's deploy step does: a task definition revision with the new image, the service on it."""
    ecs = plane.target.client("ecs")
    cluster = next(c for c in ecs.list_clusters()["clusterArns"] if "prod" in c)
    service = ecs.describe_services(cluster=cluster, services=ecs.list_services(cluster=cluster)["serviceArns"])[
        "services"][0]
    current = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    for container in current["containerDefinitions"]:
        container["image"] = container["image"].rsplit(":", 1)[0] + f":{tag}"
    keep = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions",
            "requiresCompatibilities", "cpu", "memory")
    revision = ecs.register_task_definition(**{k: current[k] for k in keep})["taskDefinition"]
    ecs.update_service(cluster=cluster, service=service["serviceName"], taskDefinition=revision["taskDefinitionArn"])
    return revision["taskDefinitionArn"]


def _requests_through_the_alb(plane: StandIn) -> int:
    """Requests HAProxy has sent to the tasks so far (its stats' session totals; health checks not counted)."""
    with urllib.request.urlopen(plane.urls["stats"] + ";csv", timeout=2) as response:
        rows = csv.DictReader(io.StringIO(response.read().decode().lstrip("# ")))
        return sum(int(row["stot"] or 0) for row in rows if row["svname"] == "BACKEND")


def test_gate_waits_for_a_rollout_that_converges_within_the_deadline(plane, tmp_path):
    # The deploy starts once the gate's first round is under way, so that round must see the old version
    # however fast the rollout is, and the gate must wait for it.
    before = _requests_through_the_alb(plane)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(gate, plane, tmp_path, "--deadline", "60", version="v2")
        with suppress(WaitTimeout):
            until(lambda: _requests_through_the_alb(plane) >= before + 5 or running.done(), 60,
                  "the gate's first round", poll_s=0.05)
        _deploy(plane, "v2")
        run = running.result()
    try:
        assert run.returncode == 0, run.stdout[-3000:]
        rounds = run.summary["gate"]["rounds"]
        assert len(rounds) >= 2 and "SMK-08" in rounds[0]["failing"] and rounds[-1]["failing"] == []
    finally:
        _deploy(plane, "latest")
        gate(plane, tmp_path, "--deadline", "60")


def test_gate_that_never_converges_fails_with_what_it_last_saw(plane, tmp_path):
    plane.set_faults(version="0.9.0")
    run = gate(plane, tmp_path, "--deadline", "3")
    assert run.returncode == 1 and failing(run) == {"SMK-08"}
    assert len(run.summary["gate"]["rounds"]) >= 2 and run.summary["gate"]["elapsed_s"] >= 3
    assert "seen ['0.9.0']" in run.message("SMK-08")


def _roll_out(plane: StandIn, tag: str) -> None:
    """A deploy of `tag` (a new revision), waited for until every task runs it in the target group and no old
    one is left."""
    revision = _deploy(plane, tag)

    def rolled() -> bool:
        state = TaskState.read(plane.root)
        return bool(state.deployment and state.deployment.task_definition == revision and state.deployment.rolled
                    and not any(t.draining for t in state.tasks))

    until(rolled, 90, f"the service rolled onto {tag}")


def test_a_dead_task_is_restarted(plane):
    victim = TaskState.read(plane.root).tasks[0].pid
    os.kill(victim, signal.SIGKILL)
    try:
        start = time.monotonic()
        while time.monotonic() - start < 30:
            now = TaskState.read(plane.root)
            if now.restarts >= 1 and now.tasks[0].pid != victim and _answers(plane.ports.tasks[0]) \
                    and _answers(plane.ports.admin[0], "/faults"):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the killed task was not started again")
    finally:
        _roll_out(plane, "latest")  # a deployment no task of which stopped, for the gates after this test


def test_a_task_that_dies_in_the_stability_window_fails_smk10_naming_it(plane, tmp_path):
    """The crash the load balancer hides: after a deploy, a healthy revision passes a 20 s window; with one
    task's process killed about 10 s into a 30 s window the gate fails on SMK-10, naming that task (its slot
    and process) and its exit code as ECS reports a SIGKILL (137). A request in flight on the task may fail
    the round too (SMK-05, say): SMK-10 is then read again, and names the task all the same."""
    _roll_out(plane, "v5")
    try:
        run = gate(plane, tmp_path / "healthy", "--stable-for", "20", version="v5")
        assert run.returncode == 0, run.stdout[-3000:]
        assert run.summary["gate"]["stable_s"] >= 20 and run.ids_with("pass") >= {"SMK-10"}, run.summary["gate"]

        victim = max((t for t in TaskState.read(plane.root).tasks if t.registered), key=lambda t: t.task)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            running = pool.submit(gate, plane, tmp_path / "killed", "--stable-for", "30", version="v5")
            # The gate's first round takes a second or two; the window opens after it.
            until(lambda: time.monotonic() - started >= 11 or running.done(), 20, "10 s into the window", poll_s=0.1)
            os.kill(victim.pid, signal.SIGKILL)
            run = running.result()
        assert run.returncode == 1 and "SMK-10" in failing(run), run.stdout[-3000:]
        message = run.message("SMK-10")
        into = re.match(r"(\d+) s into the 30 s stability window: 1 task\(s\) of ", message)
        assert into and 6 <= int(into.group(1)) <= 16, message
        assert f"{victim.task} (pid {victim.pid})" in message and "exit code 137: Essential container in task " \
            "exited [EssentialContainerExited]" in message, message
        assert run.summary["gate"]["stable_s"] < 30, run.summary["gate"]
        print(f"failing {sorted(failing(run))}; SMK-10: {message}")
    finally:
        _roll_out(plane, "latest")


def _answers(port: int, path: str = "/api/health") -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_local_up_is_idempotent_and_down_leaves_nothing(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="dg-", dir="/tmp"))
    root.chmod(0o755)
    endpoint = f"http://127.0.0.1:{free_port()}"
    cli = [sys.executable, "-m", "harness.cli", "local"]
    args = ["--endpoint-url", endpoint, "--port-offset", "1000", "--plan", str(ROOT / "plan" / "dougust.toml")]
    try:
        up = subprocess.run([*cli, "up", *args], cwd=root, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        assert "https://localhost:19443" in up.stdout and "--ca-bundle" in up.stdout
        again = subprocess.run([*cli, "up", *args], cwd=root, capture_output=True, text=True, timeout=60)
        assert "already up" in again.stdout
        status = json.loads(subprocess.run([*cli, "status", *args], cwd=root, capture_output=True, text=True,
                                           timeout=60).stdout)
        pids = [status["emulator"]["pid"], status["tasks"]["supervisor"], status["load_balancer"]["pid"],
                *(t["pid"] for t in status["tasks"]["tasks"]), *(n["pid"] for n in status["database"].values())]
        assert all(pids), status
    finally:
        subprocess.run([*cli, "down", *args], cwd=root, capture_output=True, text=True, timeout=120)
    ports = [16432, 16433, 14001, 14002, 14101, 14102, 19080, 19443, 19404]
    assert not [p for p in ports if endpoint_listening(f"http://127.0.0.1:{p}")]
    assert not endpoint_listening(endpoint)
    assert not [p for p in pids if process_alive(p)]
    shutil.rmtree(root, ignore_errors=True)


def test_notes_are_scoped_to_their_owner(plane):
    """The tenant-scoped resource the load journeys use: list, create, get; nobody else's notes."""
    base = plane.urls["https"]
    with requests.Session() as client:
        client.trust_env = False  # else REQUESTS_CA_BUNDLE, where set, overrides the CA given here
        client.verify = str(plane.ca_file)
        tokens = []
        for who in ("alice", "bob"):
            account = {"email": f"{who}-{time.time_ns()}@example.com", "password": "a long enough password"}
            response = client.post(f"{base}/api/auth/register", json=account, timeout=10)
            assert response.status_code == 201, response.text
            tokens.append({"Authorization": f"Bearer {response.json()['accessToken']}"})
        created = client.post(f"{base}/api/notes", json={"title": "rota", "body": "on call"}, headers=tokens[0],
                              timeout=10)
        assert created.status_code == 201
        note = created.json()
        assert client.get(f"{base}/api/notes/{note['id']}", headers=tokens[0], timeout=10).json()["title"] == "rota"
        assert [n["id"] for n in client.get(f"{base}/api/notes", headers=tokens[0], timeout=10).json()][0] == note["id"]
        assert client.get(f"{base}/api/notes/{note['id']}", headers=tokens[1], timeout=10).status_code == 404
        assert client.get(f"{base}/api/notes", headers=tokens[1], timeout=10).json() == []
        assert client.get(f"{base}/api/notes", timeout=10).status_code == 401


def test_the_stand_in_refuses_to_serve_another_environment(plane):
    other = StandIn(plane.root, plane.plan_path, "dev", plane.endpoint_url, plane.ports)
    with pytest.raises(StandInError, match="runs environment 'prod'; run 'harness local down' first"):
        other.up()
