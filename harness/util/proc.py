"""Nothing the harness starts outlives it.

Every process the harness starts for a run (Locust, skopeo, a session's stand-in) is bound to the harness
process through a watchdog: a small process of its own session that holds the read end of a pipe whose
write end only the harness holds. However the harness ends (normally, Ctrl-C, SIGTERM, an OOM kill or a
cancelled CI job's SIGKILL), the kernel closes that pipe; the watchdog reads end-of-file and undoes what is
still registered: each bound process group gets SIGTERM, and SIGKILL `GRACE_S` later if any of it is left;
each registered command (a stand-in's `down`) is run, bounded in time.

A process group, not a PID: Locust's workers, skopeo's helpers and whatever a child forks go with it.

    process = proc.spawn(argv, log=path)      # its own process group, bound
    ...
    proc.stop(process)                        # SIGTERM the group, wait, SIGKILL; unbound

    token = proc.on_death([...argv...])       # run this if the harness dies first
    proc.cancel(token)                        # ... unless it was done in order

The watchdog starts on first use, once per harness process (each pytest-xdist worker has its own), and exits
with the harness. `python -m harness.util.proc` is the watchdog itself.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

GRACE_S = 2.0  # between SIGTERM and SIGKILL of a bound group when the harness is gone
COMMAND_TIMEOUT_S = 30.0  # a registered command still running then is killed

_lock = threading.Lock()
_watchdog: tuple[int, IO[str], subprocess.Popen[bytes]] | None = None  # (owner pid, pipe, process)
_tokens = itertools.count(1)


def _channel() -> IO[str]:
    """The pipe to this process's watchdog, started on first use (and again in a forked child)."""
    global _watchdog
    if _watchdog is not None and _watchdog[0] == os.getpid() and _watchdog[2].poll() is None:
        return _watchdog[1]
    read_end, write_end = os.pipe()  # not inherited by anything else this process starts
    process = subprocess.Popen([sys.executable, "-m", "harness.util.proc"], stdin=read_end,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                               cwd=Path(__file__).resolve().parents[1], close_fds=True)
    os.close(read_end)
    pipe = os.fdopen(write_end, "w", buffering=1)
    _watchdog = (os.getpid(), pipe, process)
    return pipe


def _send(message: dict[str, Any]) -> None:
    with _lock:
        pipe = _channel()
        pipe.write(json.dumps(message) + "\n")
        pipe.flush()


def bind(process: subprocess.Popen[Any]) -> None:
    """Bind a process started with `start_new_session=True` (its PID is its process group)."""
    _send({"op": "bind", "pgid": process.pid})


def spawn(argv: list[str], log: Path | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """Start `argv` in a process group of its own, bound to the harness. Output goes to `log` (appended) when
    given; stdin is /dev/null unless `popen` says otherwise."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    out = log.open("ab") if log is not None else None
    try:
        if out is not None:
            popen.setdefault("stdout", out)
            popen.setdefault("stderr", subprocess.STDOUT)
        process = subprocess.Popen(argv, start_new_session=True, **popen)
    finally:
        if out is not None:
            out.close()
    try:
        bind(process)
    except BaseException:
        _kill_group(process.pid, signal.SIGKILL)
        process.wait()
        raise
    return process


def run(argv: list[str], timeout_s: float, **popen: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(argv, capture_output=True, text=True)` bound to the harness and bounded: past
    `timeout_s` the process group is killed and `subprocess.TimeoutExpired` raised."""
    process = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        out, err = process.communicate(timeout=timeout_s)
    finally:
        stop(process, timeout_s=0)
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def stop(process: subprocess.Popen[Any], timeout_s: float = 15.0) -> None:
    """Stop a bound process in order: SIGTERM to its group, SIGKILL to the group past `timeout_s`, then
    unbind it. The group is signalled even when its leader has already exited (its children may not have)."""
    if process.poll() is None:
        _kill_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(process.pid, signal.SIGKILL)
    process.wait()
    _send({"op": "unbind", "pgid": process.pid})


def on_death(argv: list[str], cwd: Path | None = None) -> int:
    """Have the watchdog run `argv` if the harness ends before `cancel(token)`; returns the token."""
    token = next(_tokens)
    _send({"op": "run", "token": token, "argv": argv, "cwd": str(cwd) if cwd else None})
    return token


def cancel(token: int) -> None:
    _send({"op": "cancel", "token": token})


def watchdog_pid() -> int | None:
    """The PID of this process's watchdog, if it has started (for the self-tests)."""
    return _watchdog[2].pid if _watchdog is not None and _watchdog[0] == os.getpid() else None


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch(stream: IO[str]) -> None:
    """Read registrations until end-of-file (the harness is gone), then undo what is still registered."""
    groups: set[int] = set()
    commands: dict[int, dict[str, Any]] = {}
    for line in stream:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        op = message.get("op")
        if op == "bind":
            groups.add(int(message["pgid"]))
        elif op == "unbind":
            groups.discard(int(message["pgid"]))
        elif op == "run":
            commands[int(message["token"])] = message
        elif op == "cancel":
            commands.pop(int(message["token"]), None)
    for pgid in groups:
        _kill_group(pgid, signal.SIGTERM)
    running = [subprocess.Popen(c["argv"], cwd=c.get("cwd"), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True) for c in commands.values()]
    deadline = time.monotonic() + GRACE_S
    while any(_group_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pgid in groups:
        _kill_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_group(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    # The terminal's Ctrl-C and a job's SIGTERM are for the harness; the watchdog outlives them to clean up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _watch(sys.stdin)


def process_alive(pid: int) -> bool:
    """kill(pid, 0) also succeeds for a zombie, and a process that crashed or was killed stays one until its
    parent (often a container's PID 1, which may reap lazily) collects it: on Linux, ask /proc."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill's answer stands
