"""Container image (Security 3, Phase 2): what the service runs, looked at without running it. The image is
--image's (the build pipeline, before the push) or the one the service's task definition names (nightly);
the image's files are read from its unpacked layers, its own `id` is asked through pytest-testinfra in a
sandbox, the rest comes from its config."""
from __future__ import annotations

import pytest

from harness.image import judges


@pytest.mark.requirement("IMG-01")
def test_runs_as_a_non_root_user(image_commands, expect, settle):
    settle(judges.non_root_user(image_commands, expect))


@pytest.mark.requirement("IMG-02")
def test_exposes_the_port_in_production_mode(image, expect, settle):
    settle(judges.port_and_environment(image, expect))


@pytest.mark.requirement("IMG-03")
def test_minimal_base(image, expect, settle, pytestconfig):
    if pytestconfig.option.target == "local" and not pytestconfig.option.image:
        pytest.skip("not observable on this target: the stand-in's image is not built from the plan's base (no "
                    "Alpine package is reachable here, so it is busybox); IMG-03 is judged on --image and on AWS")
    settle(judges.minimal_base(image, expect))


@pytest.mark.requirement("IMG-04")
def test_no_secrets_baked_in(image, expect, settle):
    settle(judges.no_baked_secrets(image, expect))


@pytest.mark.requirement("IMG-05")
def test_health_check_probes_the_health_endpoint(image, expect, settle):
    settle(judges.health_check(image, expect))


@pytest.mark.requirement("IMG-06")
def test_production_dependencies_only(image, expect, settle):
    settle(judges.production_dependencies(image, expect))
