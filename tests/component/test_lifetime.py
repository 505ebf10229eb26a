"""Nothing the harness starts outlives it (harness/util/proc.py): a harness process that binds children and
is then killed (SIGKILL, SIGTERM, Ctrl-C) leaves nothing behind within 5 s, its registered clean-up
commands run, and what it stopped or cancelled in order is not touched again."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support.suites import ROOT

from support.waiting import wait_for
from harness.util.proc import process_alive

# The harness stand-in: binds a process group (a shell with a child of its own, which ignores SIGTERM when
# asked to), registers a clean-up command, prints the PIDs, then waits to be killed.
HARNESS = textwrap.dedent("""
    import sys, time
    from harness.util import proc
    trap = "trap '' TERM; " if sys.argv[2] == "stubborn" else ""
    child = proc.spawn(["sh", "-c", trap + "sleep 300 & wait"])
    token = proc.on_death(["sh", "-c", f"echo ran > {sys.argv[1]}"])
    if sys.argv[3] == "cancel":
        proc.cancel(token)
    if sys.argv[3] == "stop":
        proc.stop(child)
    print(child.pid, proc.watchdog_pid(), flush=True)
    if sys.argv[3] == "exit":
        sys.exit(0)
    time.sleep(300)
""")


def _group_alive(pgid: int) -> bool:
    """Some process of the group runs (a zombie its dead parent left for init to reap does not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _harness(tmp_path: Path, mode: str = "plain", then: str = "wait") -> tuple[subprocess.Popen[str], int, int]:
    process = subprocess.Popen([sys.executable, "-c", HARNESS, str(tmp_path / "ran"), mode, then], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    child, watchdog = (int(x) for x in process.stdout.readline().split())  # type: ignore[union-attr]
    return process, child, watchdog


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("mode", ["plain", "stubborn"])
def test_a_killed_harness_leaves_nothing_behind(tmp_path, how, mode):
    process, child, _ = _harness(tmp_path, mode)
    assert _group_alive(child)
    # SIGINT as a terminal sends it: to the harness's whole foreground group, which the bound child is not in.
    os.killpg(process.pid, how)
    killed = time.monotonic()
    process.wait(timeout=10)
    seconds = wait_for(lambda: not _group_alive(child), 5, lambda: f"process group {child} still runs")
    assert time.monotonic() - killed < 5
    if mode == "stubborn":  # only SIGKILL, GRACE_S after SIGTERM, ends it
        assert seconds >= 1.5
    wait_for(lambda: (tmp_path / "ran").exists(), 5, lambda: "the clean-up command did not run")


@pytest.mark.parametrize("then", ["cancel", "stop"])
def test_what_was_undone_in_order_is_not_undone_again(tmp_path, then):
    process, child, watchdog = _harness(tmp_path, then=then)
    if then == "stop":
        assert not _group_alive(child)
    else:
        assert _group_alive(child)
    process.kill()
    process.wait()
    wait_for(lambda: not process_alive(watchdog), 5, lambda: f"watchdog {watchdog} still runs")
    assert (tmp_path / "ran").exists() == (then == "stop")  # a cancelled command never runs


def test_the_watchdog_ends_with_a_harness_that_ends_normally(tmp_path):
    process, child, watchdog = _harness(tmp_path, then="exit")
    assert process.wait(timeout=10) == 0
    wait_for(lambda: not _group_alive(child), 5, lambda: f"process group {child} still runs")
    wait_for(lambda: not process_alive(watchdog), 5, lambda: f"watchdog {watchdog} still runs")


def test_run_is_bounded_and_leaves_nothing(tmp_path):
    from harness.util import proc

    done = proc.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout_s=10)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    marker = tmp_path / "late"
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        proc.run(["sh", "-c", f"sleep 0.5; (sleep 2; touch {marker}) & sleep 30"], timeout_s=1)
    assert time.monotonic() - start < 5
    time.sleep(2.5)
    assert not marker.exists()  # the background child went with its group
