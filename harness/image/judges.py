"""The image checks IMG-01..07 as pure functions of the gathered facts (inspect.py) and the plan's expected
values: each returns a verdict with the evidence it rests on (the offending file and the layer it came
from, the config field). `skip` names what could not be looked at; it is never a pass.
"""
from __future__ import annotations

import posixpath
import re
from typing import Any

from harness.image.inspect import ImageFacts, user_part
from harness.image.unpack import deleted_by
from harness.verdict import Verdict
from harness.util.redact import MASK, secret_variable

# Files that hold credentials by their name; a private key is also found by its content (unpack.py).
SECRET_FILE = re.compile(
    r"^\.env(\.(?!example$|sample$|template$|dist$)[\w.-]+)?$"  # .env, .env.production; not .env.example
    r"|^id_(rsa|dsa|ecdsa|ed25519)$|\.(key|p12|pfx|jks|keystore)$"
    r"|^\.(npmrc|pgpass|netrc|git-credentials|htpasswd|envrc)$|^credentials(\.json|\.db)?$|^secrets?\.(json|ya?ml)$"
    r"|^service-account.*\.json$|(^|[._-])tokens?(\.(txt|json))?$")
SECRET_PATH = re.compile(r"/\.docker/config\.json$|/\.aws/config$")
TEST_DIRS = {"test", "tests", "__tests__", "spec", "e2e"}


def non_root_user(facts: ImageFacts, expect: dict[str, Any]) -> Verdict:
    """IMG-01: config User set, not root/0, and known to the image with a non-zero uid."""
    user = user_part(facts.config.get("User"))
    evidence = {"config.User": facts.config.get("User"), "user in image": facts.user}
    if not user:
        return Verdict("fail", "the image sets no User: it runs as root", evidence)
    if user in expect.get("forbidden_users", ["root", "0"]):
        return Verdict("fail", f"the image runs as {user!r}", evidence)
    if facts.user is None:
        return Verdict("skip", f"config User is {user!r}, but whether the image knows that user could not be "
                               f"checked: {facts.not_run}", evidence)
    if not facts.user["exists"]:
        return Verdict("fail", f"config User {user!r} is not a user of the image (its `id` and /etc/passwd do not "
                               f"know it)", evidence)
    if "id_says" in facts.user:
        return Verdict("fail", f"config User {user!r}: the image's `id` says uid {facts.user['id_says']}, its "
                               f"/etc/passwd says {facts.user['uid']}", evidence)
    if facts.user["uid"] == 0:
        return Verdict("fail", f"config User {user!r} has uid 0 in the image's /etc/passwd", evidence)
    return Verdict("pass", f"runs as {user!r}, uid {facts.user['uid']}", evidence)


def port_and_environment(facts: ImageFacts, expect: dict[str, Any]) -> Verdict:
    """IMG-02: the container port is exposed and the environment values are set."""
    port = f"{expect['container_port']}/tcp"
    exposed = sorted((facts.config.get("ExposedPorts") or {}).keys())
    env = facts.env
    evidence = {"config.ExposedPorts": exposed, "config.Env": sorted(env)}
    problems = [] if port in exposed else [f"port {port} is not exposed (exposed: {', '.join(exposed) or 'none'})"]
    problems += [f"{name}={env[name]!r}, not {value!r}" if name in env else f"{name} is not set"
                 for name, value in expect["env"].items() if env.get(name) != value]
    if problems:
        return Verdict("fail", "; ".join(problems), evidence)
    return Verdict("pass", f"exposes {port}; " + ", ".join(f"{k}={v}" for k, v in expect["env"].items()), evidence)


def minimal_base(facts: ImageFacts, expect: dict[str, Any]) -> Verdict:
    """IMG-03: built from the plan's base distribution, and its uncompressed size within the budget."""
    size_mb = facts.size_bytes / 1e6
    evidence = {"distribution": facts.distribution, "os_release": facts.os_release, "size_mb": round(size_mb, 1),
                "layers": len(facts.layers)}
    if facts.stopped:
        return Verdict("fail", f"the image is {facts.stopped}, against the {expect['max_size_mb']} MB budget",
                       evidence)
    problems = []
    if size_mb > expect["max_size_mb"]:
        problems.append(f"{size_mb:.1f} MB uncompressed, over the {expect['max_size_mb']} MB budget")
    wanted = expect["distribution"]
    if facts.os_release is None:
        problems.append("the image has no /etc/os-release: its base is unknown")
    elif facts.distribution != wanted:
        problems.append(f"the base is {facts.distribution!r}, not {wanted!r} (/etc/os-release)")
    if problems:
        return Verdict("fail", "; ".join(problems), evidence)
    return Verdict("pass", f"{wanted}, {size_mb:.1f} MB of {expect['max_size_mb']} MB", evidence)


def secret_files(facts: ImageFacts) -> list[dict[str, str]]:
    """Every credential-looking file any layer ships, with the layer, and the later layer that deletes it."""
    found = []
    for layer in facts.layers:
        flagged = {p: "private key" for p in layer.private_keys}
        for path, (kind, _) in layer.files.items():
            # By name outside node_modules only: packages ship test fixtures named server.key; a real key
            # there is still found by its content. Outside means by where it lands or by its name in the tar:
            # a symlinked directory cannot move a .env into node_modules. A symlink named .env counts too.
            in_modules = "/node_modules/" in path and "/node_modules/" in layer.named.get(path, path)
            if kind in ("file", "hardlink", "symlink") and not in_modules \
                    and (SECRET_FILE.search(posixpath.basename(path)) or SECRET_PATH.search(path)):
                flagged.setdefault(path, "credential file")
        for path, why in sorted(flagged.items()):
            later = next((other.describe() for other in facts.layers
                          if other.index > layer.index and deleted_by(path, other)), None)
            found.append({"path": path, "what": why, "layer": layer.describe(),
                          **({"deleted_in": later} if later else {})})
    return found


def no_baked_secrets(facts: ImageFacts, expect: dict[str, Any]) -> Verdict:
    """IMG-04: no secret-looking variable with a value in the config, no credential file in any layer (a
    file a later layer deletes is still in the image)."""
    # The facts hold the config masked (inspect.masked_config): a masked value was a secret's.
    variables = sorted(name for name, value in facts.env.items() if value == MASK or secret_variable(name, value))
    files = secret_files(facts)
    evidence = {"variables": variables, "files": files}
    problems = [f"config.Env sets {name}" for name in variables]
    problems += [f"{f['what']} {f['path']} in {f['layer']}" + (f", deleted in {f['deleted_in']} but still shipped"
                                                               if "deleted_in" in f else "") for f in files]
    if problems:
        return Verdict("fail", "; ".join(problems), evidence)
    if facts.stopped:
        return Verdict("skip", f"no secret in the config or in the {len(facts.layers)} layers unpacked, but the "
                               f"image is {facts.stopped}", evidence)
    return Verdict("pass", f"no secret in the config or in any of {len(facts.layers)} layers", evidence)


def health_check(facts: ImageFacts, expect: dict[str, Any]) -> Verdict:
    """IMG-05: a HEALTHCHECK whose command probes the plan's health path."""
    check = facts.config.get("Healthcheck") or {}
    test = check.get("Test") or []
    evidence = {"config.Healthcheck": check}
    if not test or test[0] == "NONE":
        return Verdict("fail", "the image has no HEALTHCHECK", evidence)
    command = " ".join(test[1:])
    if not re.search(re.escape(expect["path"]) + r"(?![\w/.-])", command):  # /api/health, not /api/healthz
        return Verdict("fail", f"the HEALTHCHECK runs {command!r}, which does not probe {expect['path']}", evidence)
    return Verdict("pass", f"HEALTHCHECK {command}", evidence)


def production_dependencies(facts: ImageFacts, expect: dict[str, Any]) -> Verdict:
    """IMG-06: no devDependencies of the app's package.json under its node_modules, no .git, no test folders
    in the app."""
    # The app and its node_modules where the container finds them (a symlinked WorkingDir hides nothing).
    app = (facts.app or facts.workdir).rstrip("/")
    modules = facts.modules or f"{app}/node_modules"
    files = facts.final_files
    git = sorted(p for p in files if posixpath.basename(p) == ".git")
    tests = sorted(p for p, (kind, _) in files.items()
                   if kind in ("dir", "symlink") and posixpath.basename(p) in TEST_DIRS and p.startswith(app + "/")
                   and not p.startswith(modules + "/"))
    problems = [f"{p} is in the image" for p in git + tests]
    evidence: dict[str, Any] = {"git": git, "test folders": tests, "app": app or "/"}
    if facts.package_json is None:
        reason = facts.package_json_problem or (facts.stopped and f"package.json could not be read: the image "
                                                                  f"is {facts.stopped}")
        if problems:
            return Verdict("fail", "; ".join(problems), evidence)
        if reason:
            return Verdict("skip", f"{reason}; the rest passes", evidence)
        return Verdict("fail", f"no package.json in the app's directory {app or '/'} (config WorkingDir): the "
                               "image does not show that its dependencies are production ones", evidence)
    dev = sorted(facts.package_json.get("devDependencies") or {})
    packages = (facts.installed_lock or {}).get("packages")
    if isinstance(packages, dict):
        # npm's own record: a package a production dependency also needs is not "dev", whatever its name.
        installed = sorted(path.removeprefix("node_modules/") for path, meta in packages.items()
                           if isinstance(meta, dict) and meta.get("dev") and isinstance(path, str)
                           and f"{modules}/{path.removeprefix('node_modules/')}" in files)
        evidence["judged by"] = f"{modules}/.package-lock.json"
    else:
        installed = sorted(name for name in dev if f"{modules}/{name}" in files)
        evidence["judged by"] = "the devDependencies of package.json"
    evidence.update({"devDependencies": dev, "installed devDependencies": installed})
    problems += [f"devDependency {name} is installed under {modules}" for name in installed]
    if problems:
        return Verdict("fail", "; ".join(problems), evidence)
    return Verdict("pass", f"no devDependency installed ({evidence['judged by']}); no .git, no test folders", evidence)


def scan_findings(scan: dict[str, Any], expect: dict[str, Any]) -> Verdict:
    """IMG-07: the registry's completed scan of the deployed image: no CRITICAL finding, HIGH within the
    budget. (A scan that is missing or not complete is not judged: the caller reports it as an error.)"""
    counts = (scan.get("imageScanFindings") or {}).get("findingSeverityCounts") or {}
    evidence = {"findingSeverityCounts": counts,
                "findings": [{k: f.get(k) for k in ("name", "severity", "uri")}
                             for f in (scan.get("imageScanFindings") or {}).get("findings", [])
                             if f.get("severity") in ("CRITICAL", "HIGH")][:20]}
    critical, high = int(counts.get("CRITICAL", 0)), int(counts.get("HIGH", 0))
    problems = []
    if critical > expect["max_critical"]:
        problems.append(f"{critical} CRITICAL finding(s), the plan allows {expect['max_critical']}")
    if high > expect["max_high"]:
        problems.append(f"{high} HIGH finding(s), the plan allows {expect['max_high']}")
    if problems:
        return Verdict("fail", "; ".join(problems), evidence)
    return Verdict("pass", f"{critical} CRITICAL, {high} HIGH (budget {expect['max_high']})", evidence)
