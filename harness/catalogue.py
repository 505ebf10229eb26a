"""The plan file as a catalogue people read: every requirement with its severity, flags and expected
values per environment, for the terminal (`harness plan`) or as Markdown (docs/requirements.md).

Rendering is pure (a plan in, text out), so the committed Markdown can be compared with what the plan
says today and cannot drift from it unnoticed.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

from harness.plan import AREAS, Plan, Requirement

FORMATS = ("text", "markdown")
REGENERATE = "harness plan --format markdown > docs/requirements.md"
SEVERITIES = {
    "critical": "data loss, exposure or outage",
    "high": "availability or security weakened",
    "medium": "operability or cost",
    "low": "hygiene",
}


@dataclass(frozen=True)
class Entry:
    """One requirement as the catalogue shows it, the per-environment differences already worked out."""

    id: str
    section: str
    text: str
    severity: str
    optional: str
    expect: list[tuple[str, str]]


def _value(value: Any) -> str:
    """TOML-like spelling, so a reader can copy a value back into the plan file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def _per_env(values: dict[str, str | None]) -> str:
    """One value when every environment agrees, else `a (dev) / b (prod)`; '-' where an env has none."""
    if len(set(values.values())) == 1:
        return next(iter(values.values())) or "-"
    return " / ".join(f"{v or '-'} ({env})" for env, v in values.items())


def _entry(req: Requirement, envs: list[str]) -> Entry:
    severity = {env: req.severity_in(env) for env in envs}
    overridden = {env: s for env, s in severity.items() if s != req.severity}
    severity_text = req.severity + "".join(f" ({env}: {s})" for env, s in overridden.items())
    optional_in = [env for env in envs if req.optional_in(env)]
    optional = "" if not optional_in else "optional" if len(optional_in) == len(envs) \
        else "optional in " + ", ".join(optional_in)
    expected = {env: req.expected(env) for env in envs}
    keys = list(dict.fromkeys(k for values in expected.values() for k in values))
    expect = [(k, _per_env({env: _value(expected[env][k]) if k in expected[env] else None for env in envs}))
              for k in keys]
    return Entry(req.id, req.section, req.text, severity_text, optional, expect)


def catalogue(plan: Plan) -> dict[str, list[Entry]]:
    """Requirements by plan area (the id prefix), areas in the order the plan file first names them."""
    envs = list(plan.environments)
    groups: dict[str, list[Entry]] = {}
    for req in plan.requirement:
        prefix = req.id.split("-")[0]
        groups.setdefault(f"{AREAS[prefix].capitalize()} ({prefix}, {req.suite}/)", []).append(_entry(req, envs))
    return groups


def _environments(plan: Plan) -> str:
    return ", ".join(f"{name} ({e.region}{', protected' if e.protected else ''})"
                     for name, e in plan.environments.items())


def render_text(plan: Plan, source: str) -> str:
    lines = [f"{plan.project}: {len(plan.requirement)} requirements from {source}; "
             f"environments {_environments(plan)}"]
    for title, entries in catalogue(plan).items():
        lines += ["", title]
        for e in entries:
            head = f"  {e.id:<7} {e.severity}" + (f", {e.optional}" if e.optional else "")
            lines.append(head)
            lines += textwrap.wrap(e.text, width=100, initial_indent=" " * 10, subsequent_indent=" " * 10)
            lines.append(f"{'':10}plan § {e.section}")
            if e.expect:
                lines += textwrap.wrap("expect " + ", ".join(f"{k} = {v}" for k, v in e.expect),
                                       width=100, initial_indent=" " * 10, subsequent_indent=" " * 17)
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(plan: Plan, source: str) -> str:
    enforced = "fails the run" if plan.plan.enforce_optional else "is reported but does not fail the run"
    lines = [
        f"> Generated from `{source}`; do not edit by hand. After changing the plan: `{REGENERATE}`",
        "",
        "# Requirements",
        "",
        f"Every requirement the harness verifies for project `{plan.project}`, as `{source}` states it. The",
        f"plan file was derived from the team's `{plan.plan.document}` (\"plan §\" names the heading of that",
        "document a requirement comes from); in this repository the plan file is the source of truth, and a test",
        "fails when this page no longer matches it. How the suites use it: [design.md](design.md).",
        "",
        f"Environments: {_environments(plan)}.",
        "A value that differs per environment is shown with each environment's name, e.g. `2 (dev) / 4 (prod)`;",
        "`-` marks an environment without that value. A severity overridden for one environment reads",
        "`high (dev: medium)`; `optional in dev` makes a requirement optional in that environment only.",
        "",
        "Severity: " + "; ".join(f"`{s}` {meaning}" for s, meaning in SEVERITIES.items()) + ".",
        f"A failing optional requirement {enforced} (`enforce_optional` in the plan file).",
    ]
    for title, entries in catalogue(plan).items():
        lines += ["", f"## {title}", "", "| id | severity | requirement | expected | plan § |",
                  "|---|---|---|---|---|"]
        for e in entries:
            severity = e.severity + (f", {e.optional}" if e.optional else "")
            expect = "<br>".join(f"`{_cell(k)} = {_cell(v)}`" for k, v in e.expect)
            lines.append(f"| {e.id} | {_cell(severity)} | {_cell(e.text)} | {expect} | {_cell(e.section)} |")
    return "\n".join(lines) + "\n"


def render(plan: Plan, fmt: str, source: str = "plan/dougust.toml") -> str:
    """The catalogue in `fmt` (one of FORMATS); `source` is how the page names the plan file it came from."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return (render_markdown if fmt == "markdown" else render_text)(plan, source)
