"""ECR's data plane for the local target: Debian's docker-registry (the CNCF distribution registry) on a
free loopback port, serving the stand-in's image under the repository and tag the service's task
definition names, with the same manifest registered in the emulator's ECR repository. The image checks
then pull the deployed image the way they do on AWS: skopeo over the registry API, with an auth file
written from ECR's authorization token (which this registry, having no authentication, does not check).

The registry lives for one session: its storage is in the session's temporary directory, and it is
stopped when the session ends, or by the harness's watchdog if the session is killed (harness/util/proc.py).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import requests

from harness.util import proc
from harness.util.files import write_atomic
from harness.image.ecr import EcrImage
from harness.util.net import free_port
from harness.util.wait import WaitTimeout, until
from harness.local.image import stand_in_image
from harness.target import Target

START_S = 15.0


class RegistryError(Exception):
    """The local registry could not serve the stand-in's image; the message says where its log is."""


def _config(root: Path, port: int) -> Path:
    # JSON is YAML: the registry reads this as its configuration file.
    return write_atomic(root / "config.yml", json.dumps({
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "local-stand-in-only"},
    }))


@contextmanager
def serving(root: Path) -> Iterator[str]:
    """A registry on loopback with its storage under `root`; yields its address, HOST:PORT."""
    if shutil.which("docker-registry") is None:
        raise RegistryError("docker-registry is not installed; install Debian's docker-registry package "
                            "(make setup does)")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = proc.spawn(["docker-registry", "serve", str(_config(root, port))], log=root / "registry.log")

    def not_started() -> RegistryError:
        return RegistryError(f"the local registry did not start; see {root / 'registry.log'}")

    def answers() -> bool:
        try:
            if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        if process.poll() is not None:
            raise not_started()
        return False

    try:
        try:
            until(answers, START_S, "the local registry to answer", poll_s=0.05)
        except WaitTimeout:
            raise not_started() from None
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop(process, timeout_s=10)


def publish(registry: str, image: EcrImage, target: Target, workdir: Path, port: int) -> str:
    """Build the stand-in's image, push it to `registry` as `image` names it, and register its manifest in
    the emulator's ECR repository under the same tag; returns the image's digest."""
    tag = image.tag or "latest"
    layout = stand_in_image(workdir / "stand-in-image", tag, port)
    try:
        done = proc.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                             f"oci:{workdir / 'stand-in-image'}:{tag}", f"docker://{registry}/{image.repository}:{tag}"],
                            timeout_s=120)
    except subprocess.TimeoutExpired:
        raise RegistryError(f"pushing the stand-in's image to {registry} took over 120 s") from None
    if done.returncode != 0:
        raise RegistryError(f"pushing the stand-in's image to {registry} failed: {done.stderr.strip()[-300:]}")
    manifest = (workdir / "stand-in-image" / "blobs" / "sha256" / layout.digest.split(":")[1]).read_text()
    ecr = target.client("ecr")
    try:
        ecr.put_image(repositoryName=image.repository, imageManifest=manifest, imageTag=tag,
                      imageManifestMediaType=json.loads(manifest)["mediaType"])
    except ecr.exceptions.ImageAlreadyExistsException:
        pass  # a reused emulator holds it from an earlier session
    return layout.digest
