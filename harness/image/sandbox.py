"""Commands of an untrusted image, run in a sandbox: a testinfra backend that runs each command testinfra
sends inside the unpacked root filesystem with bubblewrap (Debian's `bubblewrap`, `bwrap`), never with the
runner's privileges or credentials:

- new user, PID, network, IPC, UTS and cgroup namespaces: the image's processes see no network but their
  own loopback, no process of the host, and run as an unprivileged user (uid 65534) that is not root
  outside the sandbox either: as root, the runner hands the root filesystem to uid 65534 and starts
  bwrap as that user;
- the image's root mounted read-only at /, with a fresh /proc, a read-only /dev of null, zero and urandom,
  and an empty 64 MiB /tmp;
- an environment of PATH, HOME and LANG only (no AWS_*, no CI token, nothing of the caller's);
- a time limit per command (SandboxTimeout names it), and every process of the sandbox killed when the
  command ends or is killed: bwrap's PID namespace dies with its first process, and that process with bwrap
  (--die-with-parent);
- at most OUTPUT_CAP bytes of each output stream kept; processes, memory, file sizes and the writable
  filesystems (/tmp, /dev) limited, so a fork or write loop cannot starve the runner within the time limit.

Where no sandbox can be made (bwrap missing, user namespaces not allowed) `unavailable()` says why, and
the check that needs commands (IMG-01's uid) skips with that reason; nothing of the image ever runs
without the sandbox.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

from testinfra.backend import base

COMMAND_TIMEOUT_S = 20.0
OUTPUT_CAP = 1 << 20
SANDBOX_ID = 65534  # nobody/nogroup: the user the image's commands run as, inside and outside
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/", "LANG": "C.UTF-8"}


class SandboxError(Exception):
    """A command of the image could not be judged: the sandbox could not be set up, or the command did not
    finish in time."""


class SandboxTimeout(SandboxError):
    """A command of the image did not finish within its time limit (and was killed with its sandbox)."""


# What the image's processes may use, so that none of them can starve the runner within the time limit:
# processes of the sandbox's user, address space and file size per process (prlimit, util-linux), and the
# size of the only writable filesystems, /tmp and /dev (which holds nothing but null, zero and urandom).
RLIMITS = ["--nproc=1024", f"--as={2 << 30}", f"--fsize={64 << 20}"]
TMP_BYTES = 64 << 20


def _bwrap_argv(root: Path, status_fd: int, argv: list[str]) -> list[str]:
    """bwrap reports the command's exit on `status_fd` ({"exit-code": N}) only when the command ran: without
    it the sandbox failed, whatever the output says (an image can print bwrap's messages too)."""
    env = [arg for name, value in ENV.items() for arg in ("--setenv", name, value)]
    devices = [arg for device in ("null", "zero", "urandom") for arg in ("--dev-bind", f"/dev/{device}",
                                                                            f"/dev/{device}")]
    return ["prlimit", *RLIMITS, "--",
            "bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--json-status-fd", str(status_fd), "--bind", str(root), "/", "--proc", "/proc",
            "--size", str(1 << 20), "--tmpfs", "/dev", *devices, "--remount-ro", "/dev",
            "--size", str(TMP_BYTES), "--tmpfs", "/tmp", "--remount-ro", "/",
            "--uid", str(SANDBOX_ID), "--gid", str(SANDBOX_ID), "--clearenv", *env, "--chdir", "/", "--", *argv]


def _as_sandbox_user() -> dict[str, Any]:
    """Popen's arguments that start bwrap as the sandbox's user when the runner is root."""
    if os.geteuid() != 0:
        return {}
    return {"user": SANDBOX_ID, "group": SANDBOX_ID, "extra_groups": []}


def _drain(stream: IO[bytes], into: bytearray) -> None:
    while chunk := stream.read(65536):
        if len(into) < OUTPUT_CAP:
            into.extend(chunk[:OUTPUT_CAP - len(into)])


def run(root: Path, argv: list[str], timeout_s: float = COMMAND_TIMEOUT_S) -> tuple[int, bytes, bytes]:
    """`argv` inside the sandbox over `root`: its exit status, stdout and stderr (each cut at OUTPUT_CAP).
    Raises SandboxTimeout past `timeout_s`, once the sandbox and everything in it is gone; SandboxError
    when the sandbox could not be set up (the command never ran)."""
    status_r, status_w = os.pipe()
    try:
        process = subprocess.Popen(_bwrap_argv(root, status_w, argv), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"},
                                   cwd="/", pass_fds=(status_w,), **_as_sandbox_user())
    except OSError as exc:
        os.close(status_r)
        raise SandboxError(f"the sandbox could not be started: {exc}") from None
    finally:
        os.close(status_w)
    out, err, status = bytearray(), bytearray(), bytearray()
    with os.fdopen(status_r, "rb") as status_file:
        readers = [threading.Thread(target=_drain, args=(stream, into), daemon=True)
                   for stream, into in ((process.stdout, out), (process.stderr, err), (status_file, status))]
        for reader in readers:
            reader.start()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise SandboxTimeout(f"{' '.join(argv)[:120]!r} did not finish within {timeout_s:g} s in the image's "
                                 f"sandbox; it was killed") from None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            for reader in readers:
                reader.join(timeout=5)
            process.stdout.close()  # type: ignore[union-attr]
            process.stderr.close()  # type: ignore[union-attr]
    if b'"exit-code"' not in status:
        detail = (bytes(err).decode(errors="replace").strip().splitlines() or [f"exit {process.returncode}"])[-1]
        raise SandboxError(f"the sandbox could not be set up: {detail[:200]}")
    return process.returncode, bytes(out), bytes(err)


@functools.cache
def unavailable() -> str | None:
    """Why no sandbox can be made on this machine, or None. Probed once, exactly as the image's commands
    are run, over the host's own root (read-only) with its own `true`, so an image can neither fake nor hide
    the answer."""
    for tool, package in (("bwrap", "bubblewrap"), ("prlimit", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: install Debian's {package} package (make setup does)"
    try:
        rc, _, _ = run(Path("/"), ["true"], timeout_s=30)
    except SandboxError as exc:
        return (f"no sandbox can be made here ({exc}): unprivileged user namespaces must be allowed (on Ubuntu "
                f"24.04: sysctl kernel.apparmor_restrict_unprivileged_userns=0)")
    return None if rc == 0 else f"the sandbox's probe exited {rc}"


def hand_over(root: Path) -> None:
    """As root, give the unpacked root filesystem to the sandbox's user, who reads it from inside; the
    runner (root) still removes it afterwards. Nothing is followed: links are changed themselves. The
    directories that hold it must let that user pass (ImageSession's are 0711)."""
    if os.geteuid() != 0:
        return
    os.lchown(root, SANDBOX_ID, SANDBOX_ID)
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(directory, name), SANDBOX_ID, SANDBOX_ID)


class SandboxBackend(base.BaseBackend):
    """testinfra's backend for an image's root filesystem: every command through `/bin/sh -c` in the
    sandbox, as testinfra's chroot backend does without one."""

    NAME = "harness-sandbox"

    def __init__(self, root: Path, timeout_s: float | None = None, **kwargs: Any) -> None:
        self.root, self.timeout_s = root, COMMAND_TIMEOUT_S if timeout_s is None else timeout_s
        super().__init__(str(root), **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        cmd = self.get_command(command, *args)
        rc, out, err = run(self.root, ["/bin/sh", "-c", cmd], self.timeout_s)
        return self.result(rc, self.encode(cmd), out, err)
