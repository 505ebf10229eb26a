"""IMG-07 through the suite on `--target aws`, the only target where it is judged: the snapshot finds the
service's image, and ECR's completed scan of it passes or fails the requirement on its findings.

The account is moto's server with the plan's environment provisioned into it (as the team's CDK would),
the image pushed to its repository, and the scan's findings set through moto's API; the suite reads it
all with read calls only, as it would a real account.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
import requests

from harness.iam import is_read
from harness.local.provision import CURRENT_IMAGE_TAG, provision
from harness.plan import load_plan
from harness.target import Target
from support.suites import ROOT, run_suite

PLAN = load_plan(ROOT / "plan" / "dougust.toml")
REGION = PLAN.environment("prod").region
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_PROFILE": None,
               "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


@pytest.fixture
def account(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The plan's prod in a fresh emulator, with the image the service runs pushed to its repository."""
    for key, value in CREDENTIALS.items():
        monkeypatch.delenv(key, raising=False) if value is None else monkeypatch.setenv(key, value)
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    provision(Target("localstack", REGION, endpoint_url=moto_endpoint).client, PLAN, "prod")
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=moto_endpoint)
    repository = ecr.describe_repositories()["repositories"][0]["repositoryName"]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {}, "layers": []})
    ecr.put_image(repositoryName=repository, imageManifest=manifest, imageTag=CURRENT_IMAGE_TAG)
    yield moto_endpoint
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()


def scan_result(endpoint: str, counts: dict[str, int]) -> None:
    """ECR's completed scan of the service's image, with these counts by severity (one finding each)."""
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=endpoint)
    repository = ecr.describe_repositories()["repositories"][0]["repositoryName"]
    ecr.start_image_scan(repositoryName=repository, imageId={"imageTag": CURRENT_IMAGE_TAG})
    findings = [{"name": f"CVE-2026-{n:04d}", "severity": severity}
                for n, (severity, count) in enumerate(counts.items()) for _ in range(count)]
    result = {"repositoryName": repository, "imageId": {"imageTag": CURRENT_IMAGE_TAG},
              "imageScanStatus": {"status": "COMPLETE", "description": "done"},
              "imageScanFindings": {"findingSeverityCounts": counts, "findings": findings}}
    requests.post(f"{endpoint}/moto-api/static/ecr/scan-finding-results",
                  json={"results": [result], "region": REGION}, timeout=5).raise_for_status()


@pytest.mark.parametrize(("counts", "status", "said"), [
    ({"MEDIUM": 3}, "pass", ""),
    ({"CRITICAL": 1}, "fail", "1 CRITICAL finding(s), the plan allows 0"),
    (None, "error", "ScanNotFoundException"),
], ids=["medium findings only", "one critical finding", "never scanned"])
def test_img_07_judges_ecr_s_scan_of_the_deployed_image(account: str, tmp_path, counts, status, said):
    if counts is not None:
        scan_result(account, counts)
    run = run_suite("--target", "aws", "--endpoint-url", account, "--region", REGION, "-k", "scan_findings",
                    suite="compliance/test_registry.py", reports=tmp_path / "reports", env=CREDENTIALS)
    assert run.status("IMG-07") == status, run.stdout[-3000:] + run.stderr[-2000:]
    assert said in run.message("IMG-07"), run.message("IMG-07")
    assert run.returncode == (0 if status == "pass" else 1)  # an ERROR fails the run too: nothing was judged
    calls = run.summary["api_calls_by_operation"]
    assert not [call for call in calls if not is_read(call.replace(".", ":", 1))], calls
