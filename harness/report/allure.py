"""Results the harness adds to an Allure results directory beside the tests' own: things a run found that
are not one test's outcome (the drift since the baseline), in Allure's result-file format, so every
Allure report generator shows them with the tests."""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness.util.files import write_atomic
from harness.util.redact import mask_url_passwords

DRIFT_RESULT = "compliance.drift"  # the full name, and so the history id, of the drift's result


@dataclass(frozen=True)
class Attachment:
    name: str
    text: str
    mime: str  # e.g. "text/markdown", "application/json"
    extension: str  # without the dot


def write_result(results_dir: Path, name: str, full_name: str, status: str, description: str,
                 labels: dict[str, str], attachments: list[Attachment]) -> Path:
    """One `<uuid>-result.json` with its attachments. `full_name` gives the history id, so the same result
    of another night lines up with this one in the report's history. No URL's password is written."""
    now_ms = int(time.time() * 1000)
    sources = []
    for attachment in attachments:
        source = f"{uuid.uuid4()}-attachment.{attachment.extension}"
        write_atomic(results_dir / source, mask_url_passwords(attachment.text))
        sources.append({"name": attachment.name, "source": source, "type": attachment.mime})
    history_id = hashlib.md5(full_name.encode()).hexdigest()
    result = {
        "uuid": str(uuid.uuid4()), "historyId": history_id, "testCaseId": history_id, "name": name,
        "fullName": full_name, "status": status, "stage": "finished", "description": mask_url_passwords(description),
        "start": now_ms, "stop": now_ms, "attachments": sources,
        "labels": [{"name": key, "value": value} for key, value in labels.items()],
    }
    return write_atomic(results_dir / f"{result['uuid']}-result.json", json.dumps(result, indent=1))
