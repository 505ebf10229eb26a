"""The session's image: fetched once, judged by every image check, its temporary files (the copy, the
unpacked root filesystem, the registry credentials) removed when the session ends."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from harness.image.ecr import EcrImage, write_authfile
from harness.image.fetch import ImageError, Source, load, parse_reference
from harness.image.inspect import ImageFacts
from harness.image.unpack import Limits
from harness.target import Target


# Unpacking stops at twice the plan's size budget (IMG-03), and never past 4 GiB: enough to tell by how
# much an image is over, never enough to fill the runner's disk.
MAX_UNPACKED_BYTES = 4 << 30


def unpack_limits(budget_mb: float) -> Limits:
    return Limits(bytes=int(min(2 * budget_mb * 1e6, MAX_UNPACKED_BYTES)))


class ImageSession:
    def __init__(self, progress: Callable[[str], None], budget_mb: float) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="harness-image-"))
        # The sandbox's user (sandbox.py) passes through to the unpacked root; nothing here is listable, and
        # the registry credentials are the runner's alone (0600).
        self.workdir.chmod(0o711)
        self.progress = progress
        self.limits = unpack_limits(budget_mb)

    def _load(self, source: Source, name: str, authfile: Path | None = None) -> ImageFacts:
        started = time.monotonic()
        self.progress(f"fetching image {name}")
        workdir = self.workdir / "image"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir()
        facts = load(source, workdir, self.limits, authfile, name, self.progress)
        self.progress(f"image {name}: {len(facts.layers)} layers, {facts.size_bytes / 1e6:.1f} MB unpacked in "
                      f"{time.monotonic() - started:.1f} s" + (f"; testinfra cannot run in it: {facts.not_run}"
                                                               if facts.not_run else ""))
        return facts

    def named(self, reference: str) -> ImageFacts:
        """An image the user named (--image): raises ImageError, a usage error."""
        return self._load(parse_reference(reference), reference)

    def deployed(self, uri: str, target: Target, registry: str | None = None) -> ImageFacts:
        """The image a task definition names; from ECR with its authorization token, pulled from `registry`
        when ECR's data plane is elsewhere (the local target's registry on loopback)."""
        ecr = EcrImage.parse(uri)
        if ecr is None:
            # Only ever a registry: a task definition must not make the runner read its own files.
            if uri.strip().startswith(("oci:", "docker-archive:", "dir:", "/", ".")):
                raise ImageError(f"the task definition's image {uri!r} is not a registry reference; refused")
            return self._load(parse_reference(uri), uri)
        authfile = write_authfile(target, registry or ecr.registry, self.workdir / "auth.json")
        try:
            return self._load(Source("docker", ecr.reference(registry)), uri, authfile)
        finally:
            authfile.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


__all__ = ["ImageError", "ImageSession"]
