"""The image checks' part of the pytest plugin: the image they judge (--image's, else the one the service's
task definition names, pulled read-only), fetched before the first test so its progress lines reach the
terminal; its failure errors the image checks alone."""
from __future__ import annotations

import subprocess
from typing import Any

import botocore.exceptions
import pytest

from harness.compliance.facts import container, the_one
from harness.compliance.inventory import PartFailed, PartUnavailable
from harness.image.ecr import EcrImage, scan_findings
from harness.image.inspect import ImageFacts
from harness.image.session import ImageError, ImageSession
from harness.session import Session
from harness.target import Target, TargetError


def add_options(parser: pytest.Parser) -> None:
    parser.getgroup("harness").addoption(
        "--image", default=None, metavar="REF",
        help="the image checks judge this image instead of the one the service runs: a registry reference "
             "HOST/REPOSITORY:TAG, docker-archive:FILE (docker save) or oci:DIR")


KEY = pytest.StashKey["ImageSuite"]()


class ImageSuite:
    """The session's image directory and the image's facts, or the skip or failure of the image checks."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.images: ImageSession | None = None
        self.outcome: ImageFacts | BaseException | None = None

    def prepare(self) -> None:
        """The session's image directory; with --image, the image is fetched now (a reference that does not
        resolve is a usage error). The service's own image waits for the snapshot that names it."""
        budget_mb = self.session.plan.expected("IMG-03")["max_size_mb"]
        self.images = ImageSession(self.session.say, budget_mb)
        self.session.resources.callback(self.images.close)
        if self.session.option.image:
            try:
                self.outcome = self.images.named(self.session.option.image)
            except ImageError as exc:
                raise TargetError(str(exc)) from None

    def fetch_deployed(self, inventory: Any) -> None:
        """The image the service runs, or the skip or failure that the image checks will report."""
        if self.outcome is not None:
            return
        try:
            self.outcome = self.deployed(inventory)
        except (pytest.skip.Exception, pytest.fail.Exception) as exc:
            self.outcome = exc

    def deployed(self, inventory: Any) -> ImageFacts:
        """The image the service's task definition names, pulled read-only from its registry (on the local
        target, a registry on loopback started for the session serves ECR's data plane)."""
        assert self.images is not None
        if self.session.option.snapshot:
            pytest.skip("the image checks need the image itself, which a saved snapshot does not hold; pass --image")
        uri, port = service_image(inventory, self.session.plan.expected("ECS-03"))
        target = self.session.target()
        if target.kind == "localstack" and EcrImage.parse(uri) is not None:
            pytest.skip(f"not observable on this target: the service's image {uri} names AWS's registry, which this "
                        f"endpoint does not serve; pass --image to check an image")
        try:
            registry = self._local_registry(uri, target, port) if target.kind == "local" else None
            return self.images.deployed(uri, target, registry)
        except ImageError as exc:
            pytest.fail(f"the service's image could not be checked: {exc}", pytrace=False)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, OSError, RuntimeError,
                subprocess.SubprocessError) as exc:
            # The registry token refused, a push or a tool that failed: the image checks error, the rest runs.
            pytest.fail(f"the service's image could not be checked: {type(exc).__name__}: {exc}", pytrace=False)

    def _local_registry(self, uri: str, target: Target, port: int) -> str:
        """The local target's ECR data plane for the session, serving the stand-in's image as `uri`."""
        from harness.local import registry

        assert self.images is not None
        image = EcrImage.parse(uri)
        if image is None:
            pytest.fail(f"the service's image {uri!r} is not an ECR image (ECR-04)", pytrace=False)
        try:
            address = self.session.resources.enter_context(registry.serving(self.images.workdir / "registry"))
            registry.publish(address, image, target, self.images.workdir, port)
        except registry.RegistryError as exc:
            pytest.fail(str(exc), pytrace=False)
        return address


def service_image(inventory: Any, ecs_03: dict[str, Any]) -> tuple[str, int]:
    """The image the service's task definition names, and the container port of the plan (ECS-03's expected
    values): a skip when the snapshot could not see task definitions here, an ERROR when fetching them failed."""
    port = int(ecs_03["container_port"])
    try:
        task_definitions = inventory.need("task_definitions")
    except PartUnavailable as exc:
        pytest.skip(str(exc))
    except PartFailed as exc:
        pytest.fail(f"the service's image is not known: {exc}", pytrace=False)
    return container(the_one(task_definitions, "task definition of the service"), port).get("image", ""), port


@pytest.fixture(scope="session")
def image(request: pytest.FixtureRequest) -> ImageFacts:
    """The facts of the image the checks judge: --image's, else the one the service runs; ERROR when it could
    not be fetched."""
    outcome = request.config.stash[KEY].outcome
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


@pytest.fixture(scope="session")
def image_scan(request: pytest.FixtureRequest) -> dict[str, Any]:
    """ECR's completed scan of the image the service runs (describe_image_scan_findings)."""
    suite, opt = request.config.stash[KEY], request.config.option
    if opt.image:
        pytest.skip("ECR's scan findings are of the deployed image; --image checks an image before its push")
    if opt.snapshot:
        pytest.skip("ECR's scan findings are read live; a saved snapshot does not hold them")
    if opt.target != "aws":
        pytest.skip("not observable on this target: an emulator's scan findings are canned, not a scan of the image")
    uri, _ = service_image(request.getfixturevalue("inventory"), suite.session.plan.expected("ECS-03"))
    ecr = EcrImage.parse(uri)
    if ecr is None:
        pytest.fail(f"the service's image {uri!r} is not in ECR, so ECR has no scan of it", pytrace=False)
    try:
        scan = scan_findings(suite.session.target(), ecr)
    except botocore.exceptions.ClientError as exc:
        pytest.fail(f"ecr:DescribeImageScanFindings of {uri} failed: {exc}", pytrace=False)
    status = scan.get("imageScanStatus") or {}
    if status.get("status") != "COMPLETE":
        pytest.fail(f"the scan of {uri} is {status.get('status')}: {status.get('description')}", pytrace=False)
    return scan
