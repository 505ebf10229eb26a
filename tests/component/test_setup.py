"""The set-up the README's two commands rely on: the Python dependencies installed exactly as the locks pin
them, the locks current with pyproject.toml, the Debian packages found as a normal user finds them, and the
workflows free of actionlint and ShellCheck findings. Each check is also shown failing on what it catches."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support.suites import ROOT

UV = ROOT / ".venv-uv" / "bin" / "uv"
BIN = Path(sys.executable).parent
WORKFLOWS = ROOT / ".github" / "workflows"
LOCALSTACK_VENV = ROOT / ".venv-localstack"
# A normal user's PATH on Debian: no sbin directories.
USER_PATH = "/usr/local/bin:/usr/bin:/bin"


def uv(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert UV.exists(), f"{UV} is missing: run make setup"
    environ = {**os.environ, **(env or {})}
    return subprocess.run([str(UV), *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)


def localstack_python() -> str:
    out = subprocess.run([str(ROOT / "scripts" / "localstack"), "python"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# --- the locks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("project", [".", "localstack"])
def test_lock_is_current_with_pyproject(project):
    python = sys.executable if project == "." else localstack_python()
    out = uv("lock", "--check", "--project", project, "--python", python)
    assert out.returncode == 0, (f"{project}/uv.lock is stale against {project}/pyproject.toml; run make lock\n"
                                 + out.stderr[-2000:])


@pytest.mark.parametrize("project, dependency", [(".", '"pyjwt>=2.8,<3"'), ("localstack", '"service-identity"')])
def test_a_lock_stale_against_its_pyproject_is_caught(project, dependency, tmp_path):
    """A dependency taken out of pyproject.toml, its lock left as it was: the check above fails on it."""
    source = ROOT / project
    pyproject = (source / "pyproject.toml").read_text(encoding="utf-8")
    assert f"    {dependency},\n" in pyproject
    (tmp_path / "pyproject.toml").write_text(pyproject.replace(f"    {dependency},\n", ""), encoding="utf-8")
    shutil.copy(source / "uv.lock", tmp_path / "uv.lock")
    python = sys.executable if project == "." else localstack_python()
    out = uv("lock", "--check", "--project", str(tmp_path), "--python", python)
    assert out.returncode != 0
    assert "needs to be updated" in out.stderr, out.stderr[-2000:]


def test_harness_venv_holds_exactly_what_the_lock_pins():
    out = uv("sync", "--locked", "--check", "--python", sys.executable)
    assert out.returncode == 0, out.stderr[-3000:]


def test_localstack_venv_holds_exactly_what_its_lock_pins():
    assert (LOCALSTACK_VENV / "bin" / "python").exists(), "run make localstack-setup"
    out = uv("sync", "--locked", "--check", "--project", "localstack", "--python", localstack_python(),
             env={"UV_PROJECT_ENVIRONMENT": str(LOCALSTACK_VENV)})
    assert out.returncode == 0, out.stderr[-3000:]


def test_a_venv_that_is_not_the_lock_is_caught(tmp_path):
    venv = tmp_path / "venv"
    assert uv("venv", "--quiet", "--python", sys.executable, str(venv)).returncode == 0
    out = uv("sync", "--locked", "--check", "--python", sys.executable, env={"UV_PROJECT_ENVIRONMENT": str(venv)})
    assert out.returncode != 0
    assert "Would install" in out.stderr, out.stderr[-2000:]


def test_uv_itself_is_the_version_the_lock_pins():
    pinned = subprocess.run([sys.executable, str(ROOT / "scripts" / "locked-requirement"), "uv"],
                            capture_output=True, text=True, timeout=30).stdout.split()[0]
    version = subprocess.run([str(UV), "--version"], capture_output=True, text=True, timeout=30).stdout.split()[1]
    assert pinned == f"uv=={version}"


# --- the Debian packages -----------------------------------------------------------------------------------


@pytest.fixture
def open_dir():
    """A directory under /tmp that a normal user can enter, holding a copy of scripts/system-deps: neither
    pytest's temporary directories nor a clone under `mktemp -d` are open to other users."""
    root = Path(tempfile.mkdtemp(prefix="harness-system-deps-", dir="/tmp"))
    root.chmod(0o755)
    shutil.copy(ROOT / "scripts" / "system-deps", root / "system-deps")
    yield root
    shutil.rmtree(root)


def as_normal_user(command: list[str], path: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`command` with a normal user's environment, in `cwd`: as `nobody` when the tests run as root."""
    env = {"PATH": path, "LANG": "C.UTF-8", "HOME": "/tmp"}
    prefix = [shutil.which("setpriv") or "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] \
        if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *command], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_system_deps_finds_every_installed_package_as_a_normal_user(open_dir):
    """A normal user's PATH has no /usr/sbin, where Debian puts HAProxy; the packages are installed (make
    setup has run), so nothing is to be installed and no sudo is asked for."""
    out = as_normal_user([str(open_dir / "system-deps")], USER_PATH, cwd=open_dir)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_system_deps_names_what_is_missing_when_a_normal_user_cannot_install(open_dir):
    """A PATH that holds only the shell's own tools and a dpkg-query that knows no package: what the harness
    cannot find anywhere is named, in one line with the command that installs it, and nothing is installed.
    HAProxy is not named: it is found in /usr/sbin, where the harness looks too; nor PostgreSQL, found in
    /usr/lib/postgresql."""
    bin_dir = open_dir / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "ls", "ldd", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "dpkg-query").write_text("#!/bin/bash\necho -n not-installed\n")
    (bin_dir / "dpkg-query").chmod(0o755)
    out = as_normal_user([str(bin_dir / "bash"), str(open_dir / "system-deps")], str(bin_dir), cwd=open_dir)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "scripts/system-deps: missing Debian packages: chromium skopeo busybox-static docker-registry bubblewrap "
        "faketime; as root run: apt-get install --no-install-recommends chromium skopeo busybox-static "
        "docker-registry bubblewrap faketime"]


# --- the workflows -----------------------------------------------------------------------------------------


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    """actionlint with ShellCheck for the `run:` scripts, both from the venv (locked in uv.lock)."""
    return subprocess.run([str(BIN / "actionlint"), "-no-color", "-oneline", "-shellcheck", str(BIN / "shellcheck"),
                           *map(str, files)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_workflows_have_no_finding():
    workflows = sorted(WORKFLOWS.glob("*.yml"))
    assert len(workflows) == 5
    out = actionlint(*workflows)
    assert (out.returncode, out.stdout) == (0, ""), out.stdout + out.stderr


def unexplained_suppressions(text: str) -> list[str]:
    """The lines that silence a finding without saying why: a reason must follow, as in
    `# actionlint:ignore RULE -- reason` or `# shellcheck disable=SCnnnn  # reason`."""
    return [line.strip() for line in text.splitlines()
            if "actionlint:ignore" in line and not re.search(r"actionlint:ignore\S*\s+\S+\s+--\s+\S", line)
            or "shellcheck disable=" in line and not re.search(r"shellcheck disable=\S+\s+#\s*\S", line)]


def test_every_suppression_in_the_workflows_says_why():
    unexplained = {w.name: unexplained_suppressions(w.read_text(encoding="utf-8"))
                   for w in sorted(WORKFLOWS.glob("*.yml"))}
    assert not any(unexplained.values()), unexplained


def test_a_suppression_without_its_reason_is_caught():
    text = ("# actionlint:ignore-next-line expression -- the input is a choice of four fixed values\n"
            "# actionlint:ignore expression\n"
            "# shellcheck disable=SC2086  # the flags are meant to split\n"
            "# shellcheck disable=SC2086\n")
    assert unexplained_suppressions(text) == ["# actionlint:ignore expression", "# shellcheck disable=SC2086"]


def test_actionlint_catches_a_node20_action_and_a_shell_mistake(tmp_path):
    """What the lint exists for: an action on the deprecated node20 runtime, and ShellCheck's finding in a
    `run:` script (so ShellCheck really runs: without it actionlint stays silent on scripts)."""
    workflow = tmp_path / "old.yml"
    workflow.write_text(
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - id: suite\n"
        "        run: echo exit=3 >> \"$GITHUB_OUTPUT\"\n"
        "      - run: exit \"${{ steps.suite.outputs.exit }}\"\n", encoding="utf-8")
    out = actionlint(workflow)
    assert out.returncode == 1
    findings = out.stdout.splitlines()
    assert any('runtime "node20" is deprecated' in f and "actions/checkout@v4" in f for f in findings), findings
    assert any("SC2242" in f and f.endswith("[shellcheck]") for f in findings), findings
