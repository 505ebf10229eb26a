"""Get an image without a Docker engine: skopeo (Debian's package) copies it from a registry or a
`docker save` archive into a local directory, unconverted; an OCI layout is read where it is. Then the layers are
unpacked and the facts gathered (inspect.py) for the judges.

References, as `--image` takes them:
- `docker-archive:FILE`: what `docker save -o FILE IMAGE` wrote (the build pipeline, before the push);
- `oci:DIR`: an OCI image layout (`skopeo copy ... oci:DIR`, `buildah push ... oci:DIR`);
- anything else is a registry reference, `HOST/REPOSITORY:TAG` or `...@sha256:...` (`docker://` optional).
  A registry on loopback is spoken to over plain HTTP, as a local registry serves; any other over TLS.

Registry credentials come from an auth file (`auths` as `docker login` writes them): the ECR one the
harness writes from boto3's authorization token, else skopeo's own default (REGISTRY_AUTH_FILE,
~/.docker/config.json).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.util import proc
from harness.image.inspect import ImageFacts, gather, host_architecture
from harness.image.oci import Image, LayoutError, read_dir, read_layout
from harness.image.unpack import Limits, UnpackError, unpack

COPY_TIMEOUT_S = 900
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


class ImageError(Exception):
    """The image could not be had; the message names the problem and the fix, in one line."""


@dataclass(frozen=True)
class Source:
    transport: str  # docker (a registry), docker-archive or oci
    location: str
    tag: str | None = None  # an OCI layout's image, when it holds several

    def __str__(self) -> str:
        if self.transport == "docker":
            return self.location
        return f"{self.transport}:{self.location}" + (f":{self.tag}" if self.tag else "")

    @property
    def registry(self) -> str | None:
        return self.location.split("/", 1)[0] if self.transport == "docker" and "/" in self.location else None


def parse_reference(text: str) -> Source:
    text = text.strip()
    for transport in ("docker-archive", "oci"):
        if text.startswith(transport + ":"):
            path = text[len(transport) + 1:]
            if transport == "oci" and not Path(path).exists() and ":" in path:
                path, _, tag = path.rpartition(":")  # oci:DIR:TAG, skopeo's own form
                return Source(transport, path, tag) if Path(path).exists() else parse_reference(f"oci:{path}")
            if not Path(path).exists():
                made_by = "docker save -o FILE IMAGE" if transport == "docker-archive" else "skopeo copy ... oci:DIR"
                raise ImageError(f"--image {text}: {path} does not exist; pass what `{made_by}` wrote")
            return Source(transport, path)
    location = text.removeprefix("docker://")
    if not location or any(c.isspace() for c in location) or location.endswith((":", "/", "@")):
        raise ImageError(f"--image {text!r} is not an image reference; pass HOST/REPOSITORY:TAG, "
                         "docker-archive:FILE or oci:DIR")
    return Source("docker", location)


def _explain(source: Source, stderr: str) -> str:
    """skopeo's error as one line with the fix."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    detail = (lines[-1] if lines else "no message").removeprefix("time=").strip()
    low = stderr.lower()
    if any(s in low for s in ("unauthorized", "authentication required", "denied", "forbidden")):
        return (f"the registry refused the credentials for {source}: {detail[-200:]}; for ECR check the AWS "
                f"profile's ecr:GetAuthorizationToken and ecr:BatchGetImage, otherwise log in "
                f"(REGISTRY_AUTH_FILE or ~/.docker/config.json)")
    if any(s in low for s in ("manifest unknown", "not found", "name unknown", "no such host")):
        return f"image {source} does not resolve: {detail[-200:]}; check the registry, repository and tag"
    if source.transport == "docker-archive":
        return f"{source.location} is not a readable `docker save` archive: {detail[-200:]}; save the image again"
    return f"copying {source} failed: {detail[-300:]}"


def copy(source: Source, dest: Path, authfile: Path | None = None,
         progress: Callable[[str], None] | None = None) -> Image:
    """skopeo copy of `source` (this machine's platform, for a multi-platform image) into `dest`, in the
    `dir:` format, which keeps the manifest and config as the source has them; an OCI layout is read where
    it is."""
    here = host_architecture()
    if source.transport == "oci":
        return read_layout(Path(source.location), ("linux", here), source.tag)
    if shutil.which("skopeo") is None:
        raise ImageError("skopeo is not installed; install Debian's skopeo package (make setup does)")
    argv = ["skopeo", "copy", "--retry-times", "2", "--override-os", "linux", "--override-arch", here]
    if source.transport == "docker":
        if source.registry and source.registry.rsplit(":", 1)[0] in LOOPBACK:
            argv.append("--src-tls-verify=false")
        if authfile is not None:
            argv += ["--src-authfile", str(authfile)]
        src = f"docker://{source.location}"
    else:
        src = f"docker-archive:{source.location}"
    env = {**os.environ, "TMPDIR": str(dest.parent)}  # skopeo's own temporary files go with ours
    # skopeo says which blob it copies as it goes: a line per blob, the progress of a long pull in a CI log.
    process = proc.spawn([*argv, src, f"dir:{dest}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env)
    timer = threading.Timer(COPY_TIMEOUT_S, lambda: proc.stop(process, timeout_s=0))
    timer.start()
    lines = []
    timed_out = False
    try:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if progress and line.startswith("Copying"):
                progress(line.strip())
        process.wait()
        timed_out = timer.finished.is_set()  # set by the timer firing; cancel() comes after
    finally:
        timer.cancel()
        # Interrupted or not, nothing of skopeo goes on writing into a directory that is about to be removed.
        proc.stop(process, timeout_s=0)
        process.stdout.close()  # type: ignore[union-attr]
    if process.returncode != 0:
        if timed_out:
            raise ImageError(f"copying {source} took over {COPY_TIMEOUT_S} s; check the registry's reachability")
        raise ImageError(_explain(source, "".join(lines)))
    return read_dir(dest)


def load(source: Source, workdir: Path, limits: Limits, authfile: Path | None = None, named: str | None = None,
         progress: Callable[[str], None] | None = None) -> ImageFacts:
    """Copy, unpack (within `limits`) and inspect the image; `workdir` (an empty directory of the caller's)
    holds the copy and the root filesystem until the caller removes it."""
    try:
        image = copy(source, workdir / "image", authfile, progress)
        unpacked = unpack(image, workdir / "rootfs", limits)
    except (LayoutError, UnpackError) as exc:
        raise ImageError(f"{source}: {exc}; the image is corrupt, fetch or build it again") from None
    return gather(image, unpacked, named or str(source))
