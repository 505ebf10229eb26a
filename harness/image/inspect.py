"""What the image checks judge, gathered once per image: the config, every layer's file list, the files the
checks read (os-release, passwd, the app's package.json and npm's record), read on the host from the
unpacked root, and what only the image itself can answer, its own `id` for the config's User, asked
through pytest-testinfra, so the judges in judges.py never touch the image.

testinfra runs its commands through the harness's own backend (sandbox.py): in a bubblewrap sandbox over
the unpacked root, never with the runner's privileges, environment or network. Where the sandbox cannot be
made, the image has no `/bin/sh` for this machine's architecture, or unpacking stopped, `not_run` says why
and IMG-01 reports what it could not run; everything else is still judged. A command that does not finish
in time is `command_error`: IMG-01 ERRORs with it.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.image import sandbox
from harness.image.oci import Image
from harness.image.unpack import LayerFiles, Unpacked, landing, resolve
from harness.util.redact import MASK, redact, secret_variable

ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


def host_architecture() -> str:
    """This machine's architecture as image configs name it (amd64, arm64)."""
    return ARCHITECTURES.get(platform.machine(), platform.machine())


@dataclass
class ImageFacts:
    source: str  # what was checked, as the user or the task definition named it
    digest: str
    config: dict[str, Any]  # the image config's `config`: User, Env (secret-looking values masked), ...
    architecture: str
    layers: list[LayerFiles]
    size_bytes: int
    not_run: str | None = None  # why testinfra could not run commands in the image
    command_error: str | None = None  # a command that could not be judged (its time limit, the sandbox)
    stopped: str | None = None  # why unpacking stopped before the last layer (unpack.Unpacked.stopped)
    user: dict[str, Any] | None = None  # {"name", "exists", "uid"} of the config's User, from testinfra
    distribution: str | None = None
    os_release: str | None = None
    package_json: dict[str, Any] | None = None  # WorkingDir/package.json, None when absent or unreadable
    package_json_problem: str | None = None
    # npm's record of what it installed (node_modules/.package-lock.json, npm 7+): "dev": true marks a
    # package only the devDependencies need. None when the image has none.
    installed_lock: dict[str, Any] | None = None
    final_files: dict[str, tuple[str, int]] = field(default_factory=dict)
    passwd: dict[str, int] | None = None  # /etc/passwd's users and uids, read on the host
    app: str = ""  # WorkingDir where the container finds it (symlinks resolved inside the image)
    modules: str = ""  # the app's node_modules, likewise

    @property
    def env(self) -> dict[str, str]:
        pairs = (item.partition("=") for item in self.config.get("Env") or [])
        return {name: value for name, _, value in pairs}

    @property
    def workdir(self) -> str:
        return (self.config.get("WorkingDir") or "/").rstrip("/") or "/"


def user_part(user: str | None) -> str:
    """The user of a config's `User` ("node", "node:node", "1000:1000"), without the group."""
    return (user or "").split(":")[0].strip()


def masked_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config with the value of every secret-looking variable masked, by name or by value (an empty one
    stays empty: an empty value is not a baked-in secret), and every URL's password masked."""
    env = []
    for item in config.get("Env") or []:
        name, _, value = item.partition("=")
        env.append(f"{name}={MASK}" if secret_variable(name, value) else item)
    return redact({**config, "Env": env}, plain=None)


def _cannot_run(unpacked: Unpacked, architecture: str) -> str | None:
    if unpacked.stopped:
        return f"the image was not fully unpacked: {unpacked.stopped}"
    here = host_architecture()
    if architecture != here:
        return f"the image is built for {architecture}, this machine runs {here}"
    if not resolve(unpacked.root, "bin/sh", follow_last=True).is_file():  # inside the image, never the host
        return "the image has no /bin/sh"
    return sandbox.unavailable()


def gather(image: Image, unpacked: Unpacked, source: str) -> ImageFacts:
    config = image.config.get("config") or {}
    if not isinstance(config, dict):
        config = {}
    facts = ImageFacts(source=source, digest=image.digest, config=masked_config(config),
                       architecture=image.config.get("architecture", ""), layers=unpacked.layers,
                       size_bytes=unpacked.size_bytes, final_files=unpacked.final_files(),
                       stopped=unpacked.stopped)
    if not unpacked.stopped:
        _read_files(facts, unpacked.root)
    facts.not_run = _cannot_run(unpacked, facts.architecture)
    if facts.not_run is None:
        sandbox.hand_over(unpacked.root)
        try:
            _inside(facts, unpacked)
        except sandbox.SandboxError as exc:
            facts.command_error = str(exc)
    return facts


# The files the checks read, and how much of each is read at most: data, read on the host from the root
# (resolved inside it, as the container would), never through the image's own programs, which could lie.
CAPS = {"/etc/os-release": 64 << 10, "/etc/passwd": 1 << 20, "package.json": 1 << 20,
        ".package-lock.json": 256 << 20}


def _read(root: Path, path: str, cap: int) -> bytes | None:
    """The regular file at `path` inside the image, None when there is none; ValueError past `cap`."""
    found = resolve(root, path.lstrip("/"), follow_last=True)
    if not found.is_file() or found.is_symlink():
        return None
    if found.stat().st_size > cap:
        raise ValueError(f"{path} is over {cap >> 10} KiB")
    return found.read_bytes()


def _read_files(facts: ImageFacts, root: Path) -> None:
    """What the checks read from files: the base, the users, the app's package.json and npm's record; the
    app's directory and its node_modules as the container resolves them (a symlinked WorkingDir or
    node_modules cannot hide what is in them)."""
    facts.app = landing(root, resolve(root, facts.workdir.lstrip("/"), follow_last=True))
    facts.modules = landing(root, resolve(root, f"{facts.app.lstrip('/')}/node_modules", follow_last=True))
    try:
        release = _read(root, "/etc/os-release", CAPS["/etc/os-release"])
        if release is not None:
            facts.os_release = release.decode("utf-8", "replace")
            fields = dict(line.partition("=")[::2] for line in facts.os_release.splitlines())
            facts.distribution = fields.get("ID", "").strip().strip('"').lower() or None
        passwd = _read(root, "/etc/passwd", CAPS["/etc/passwd"])
        rows = [line.split(":") for line in (passwd or b"").decode("utf-8", "replace").splitlines()]
        facts.passwd = {row[0]: int(row[2]) for row in rows if len(row) > 2 and row[2].isdigit()}
    except ValueError as exc:
        facts.package_json_problem = str(exc)
    app = facts.app.rstrip("/")
    try:
        manifest = _read(root, f"{app}/package.json", CAPS["package.json"])
        if manifest is not None:
            try:
                facts.package_json = json.loads(manifest)
            except ValueError as exc:
                facts.package_json_problem = f"{app}/package.json is not JSON: {exc}"
        lock = _read(root, f"{facts.modules}/.package-lock.json", CAPS[".package-lock.json"])
        if lock is not None:
            try:
                facts.installed_lock = json.loads(lock)
            except ValueError:
                facts.installed_lock = None  # unreadable: judged by the package.json's names instead
    except ValueError as exc:
        facts.package_json_problem = f"{exc}: too large to judge"


def _inside(facts: ImageFacts, unpacked: Unpacked) -> None:
    """The config's User, as the image's own `id` answers for it (testinfra, through the sandbox); its
    /etc/passwd, read on the host, has the last word."""
    import testinfra.host

    host = testinfra.host.Host(sandbox.SandboxBackend(unpacked.root))
    user = user_part(facts.config.get("User"))
    passwd = facts.passwd or {}
    try:
        if user.isdigit():
            # A numeric User: busybox's `id` (Alpine's) takes names only, so the image's passwd is read.
            name = next((n for n, uid in passwd.items() if uid == int(user)), None)
            facts.user = {"name": name, "exists": name is not None, "uid": int(user)}
        elif user:
            entry = host.user(user)
            exists = entry.exists
            facts.user = {"name": user, "exists": exists, "uid": entry.uid if exists else None}
            if exists and user in passwd and passwd[user] != entry.uid:
                facts.user.update(uid=passwd[user], id_says=entry.uid)
    except (AssertionError, RuntimeError, ValueError) as exc:
        # A command testinfra ran failed in a way the image explains (a broken shell, a missing applet).
        facts.not_run = f"a command in the image failed: {str(exc).splitlines()[0][:200]}"
