"""The repository documents itself: the requirement catalogue is the plan's own rendering, and nothing
points a reader at a document a clone does not have."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from support.suites import ROOT
from harness.catalogue import REGENERATE, render
from harness.cli import main
from harness.plan import load_plan

PLAN = ROOT / "plan" / "dougust.toml"
REQUIREMENTS_DOC = ROOT / "docs" / "requirements.md"
# Spelled in two halves so that this file does not name them itself.
OUTSIDE_DOCUMENTS = ("DESIGN" + ".md", "REQUIREMENTS" + ".md")


def test_committed_catalogue_is_the_plans_rendering():
    # Rendered from the plan as it is now, so a requirement added to the plan without regenerating fails here.
    rendered = render(load_plan(PLAN), "markdown", "plan/dougust.toml")
    committed = REQUIREMENTS_DOC.read_text(encoding="utf-8") if REQUIREMENTS_DOC.exists() else ""
    assert committed == rendered, f"docs/requirements.md does not match plan/dougust.toml; regenerate it: {REGENERATE}"


def test_catalogue_lists_every_requirement_of_the_plan():
    plan = load_plan(PLAN)
    markdown = render(plan, "markdown")
    rows = re.findall(r"^\| ([A-Z]+-\d{2}) \|", markdown, flags=re.MULTILINE)
    assert rows == [r.id for r in plan.requirement]


PLAN_WITH_OVERRIDES = '''
[plan]
project = "demo"
[environments.dev]
[environments.prod]
protected = true
[[requirement]]
id = "DB-03"
section = "2 Database"
severity = "medium"
text = "Instance class per environment | a pipe"
expect = { engine = "postgres" }
env.dev.expect = { instance_class = "db.t3.medium" }
env.prod.expect = { instance_class = "db.t3.large", multi_az = true }
env.dev.severity = "low"
env.dev.optional = true
[[requirement]]
id = "ALB-08"
section = "Phase 4 Security"
severity = "low"
optional = true
text = "A WAF web ACL is associated with the ALB"
'''


@pytest.mark.parametrize("fmt, wanted", [
    ("markdown", ['| DB-03 | medium (dev: low), optional in dev | Instance class per environment \\| a pipe |',
                  '`engine = "postgres"`<br>`instance_class = "db.t3.medium" (dev) / "db.t3.large" (prod)`'
                  '<br>`multi_az = - (dev) / true (prod)`',
                  '| ALB-08 | low, optional | A WAF web ACL is associated with the ALB |  | Phase 4 Security |',
                  "prod (us-east-1, protected)"]),
    ("text", ["  DB-03   medium (dev: low), optional in dev",
              'expect engine = "postgres", instance_class = "db.t3.medium" (dev) / "db.t3.large" (prod), '
              "multi_az = - (dev) / true (prod)",
              "  ALB-08  low, optional", "plan § Phase 4 Security"]),
])
def test_overrides_per_environment_are_shown(tmp_path, fmt, wanted):
    path = tmp_path / "plan.toml"
    path.write_text(PLAN_WITH_OVERRIDES)
    out = render(load_plan(path), fmt, "plan.toml")
    for line in wanted:
        assert line in out.replace("\n" + " " * 17, " ")


def test_harness_plan_prints_the_catalogue(capsys):
    assert main(["plan", "--plan", str(PLAN), "--format", "markdown"]) == 0
    assert capsys.readouterr().out == render(load_plan(PLAN), "markdown", str(PLAN))
    assert main(["plan", "--plan", str(PLAN)]) == 0
    assert capsys.readouterr().out == render(load_plan(PLAN), "text", str(PLAN))


@pytest.mark.parametrize("content, expected", [
    (None, "file not found"),
    ("[plan\n", "not valid TOML"),
    ('[plan]\nproject = "x"\n[environments.dev]\n', "requirement: is required"),
    ("directory", "cannot be read as a TOML file"),
])
def test_harness_plan_bad_input_is_one_line(tmp_path, capsys, content, expected):
    path = tmp_path / "plan.toml"
    if content == "directory":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    assert main(["plan", "--plan", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("harness: ") and expected in captured.err


def _repository_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc})")
    files = {ROOT / name for name in listed.decode().split("\0") if name}
    files |= {p for p in (ROOT / "docs").rglob("*") if p.is_file()}
    return sorted(p for p in files if p.is_file() and ".git" not in p.relative_to(ROOT).parts)


def test_no_pointer_to_documents_outside_the_repository():
    found = []
    for path in _repository_files():
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            found += [f"{path.relative_to(ROOT)}:{number}: {name}" for name in OUTSIDE_DOCUMENTS if name in line]
    assert not found, ("these point at documents a clone does not have; point at docs/design.md, "
                       "docs/requirements.md or plan/dougust.toml instead:\n" + "\n".join(found))
