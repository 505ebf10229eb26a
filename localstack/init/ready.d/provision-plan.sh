#!/usr/bin/env bash
# LocalStack ready hook: provision the plan's environment (HARNESS_ENV, default dev) into this LocalStack.
# Inside the compose setup the variables come from docker-compose.yml; on the host they default to the
# project around this file and its .venv, against LOCALSTACK_ENDPOINT (default http://127.0.0.1:4566).
set -euo pipefail
root="${HARNESS_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}"
python="${HARNESS_PYTHON:-$root/.venv/bin/python}"
# Run from a neutral directory: the project's localstack/ folder must never shadow LocalStack's package.
cd /
PYTHONPATH="$root" exec "$python" -m harness.cli provision --plan "$root/plan/dougust.toml" \
  --env "${HARNESS_ENV:-dev}" --endpoint-url "${LOCALSTACK_ENDPOINT:-http://127.0.0.1:4566}"
