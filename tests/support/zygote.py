"""Whole suites run as processes of their own, forked from one that has imported their libraries once.

A suite run in a subprocess spends most of its time importing (pytest, boto3 and the other libraries the
harness uses). The zygote pays that once per test worker: it imports them, then forks a child for each
run. The child is a fresh process as `python -m pytest` would be (its own PID, environment,
working directory, output files; nothing of the test process's state), running `pytest.main`.

Protocol, one JSON line each way: {"args", "cwd", "env", "out", "err", "timeout"} -> {"rc"} or
{"timeout": true}. The zygote exits when its stdin closes (the test worker is gone), killing a run in flight.
"""
from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


# What a suite run imports that takes long: the third-party libraries, then pytest's plugins (the harness
# among them) as pytest's own start imports them.
WARM = ("pytest", "boto3", "botocore.session", "requests", "allure_commons", "pydantic", "cryptography.x509", "psycopg",
        "jwt", "execnet", "yaml", "psutil")
ROOT = Path(__file__).resolve().parents[2]


def _warm() -> None:
    for name in WARM:
        try:
            importlib.import_module(name)
        except ImportError:  # not installed here: a run that needs it says so itself
            pass
    # pytest's start without a session: it loads the plugins through its assertion rewriting, so a run finds
    # them rewritten (as in a process of its own) and does not warn that they were imported before it. The
    # harness is found from the project's root, where `python -m pytest` finds it; no conftest is read.
    from _pytest.config import get_config

    sys.path.insert(0, str(ROOT))
    try:
        config = get_config()
        config.parse(["--noconftest", "-p", "no:cacheprovider"])
        config._ensure_unconfigure()  # removes its import hook; the modules stay as it imported them
    finally:
        sys.path.remove(str(ROOT))


def _child(request: dict) -> None:
    """Become the suite's process: its environment, directory and output; never return."""
    try:
        os.setpgid(0, 0)  # its own group, so a timeout kills whatever it started in the foreground too
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # found again from the run's TMPDIR (pytest's start in the zygote fixed it)
        os.chdir(request["cwd"])
        sys.path[0] = request["cwd"]  # as `python -m pytest` run there would have it
        # PYTHONPATH is read when an interpreter starts: the run's own goes where that start puts it.
        for entry in reversed([p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]):
            sys.path.insert(1, entry)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, path in ((1, request["out"]), (2, request["err"])):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(handle, fd)
            os.close(handle)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False, buffering=1)
        sys.stderr = open(2, "w", closefd=False, buffering=1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import pytest

        rc = int(pytest.main(request["args"]))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 (reported on the run's stderr, as Python would)
        import traceback

        traceback.print_exc()
        rc = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(rc)


def _wait(pid: int, timeout: float) -> dict:
    """The child's exit code, or a timeout once it ran `timeout` s (it is killed then); the zygote ends with
    its stdin (the test worker gone), killing the child first."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"rc": os.waitstatus_to_exitcode(status)}
        if time.monotonic() > deadline:
            _kill(pid)
            return {"timeout": True}
        readable, _, _ = select.select([sys.stdin], [], [], 0.02)
        if readable and not sys.stdin.buffer.peek(1):
            _kill(pid)
            os._exit(0)


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def serve() -> None:
    _warm()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps(_wait(pid, request["timeout"])), flush=True)


class Zygote:
    """The test process's side: one zygote per process, started on first use, gone with the process."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def run(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of `pytest ARGS` run in `cwd` with exactly `env`;
        `subprocess.TimeoutExpired` past `timeout` s, as `subprocess.run` would raise."""
        with self._lock, tempfile.TemporaryDirectory(prefix="suite-run-") as scratch:
            out, err = Path(scratch) / "stdout", Path(scratch) / "stderr"
            process = self._started()
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(json.dumps({"args": args, "cwd": str(cwd), "env": env, "out": str(out),
                                            "err": str(err), "timeout": timeout}) + "\n")
            process.stdin.flush()
            answer = json.loads(process.stdout.readline() or '{"lost": true}')
            if answer.get("lost"):
                self._process = None
                raise RuntimeError(f"the zygote ended: exit code {process.wait()}")
            stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
            if answer.get("timeout"):
                raise subprocess.TimeoutExpired(["pytest", *args], timeout, stdout, stderr)
            return answer["rc"], stdout, stderr

    def _started(self) -> subprocess.Popen[str]:
        if self._process is None or self._process.poll() is not None:
            # As a module from tests/, so that no name in support/ can shadow a module of Python's own.
            self._process = subprocess.Popen([sys.executable, "-m", "support.zygote"], cwd=Path(__file__).parents[1],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert self._process.stdout is not None
            if not json.loads(self._process.stdout.readline() or "{}").get("ready"):
                raise RuntimeError(f"the zygote did not start: exit code {self._process.wait()}")
        return self._process


if __name__ == "__main__":
    serve()
