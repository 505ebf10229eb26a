"""The drill history: one JSON line per drill run, appended to a file the quarterly workflow keeps between
quarters, so recovery can be read over time (`harness drills history`, the HTML report's charts).

A line: {"format", "run_id", "drill", "verdict", "rto_s", "rto_target_s", "rpo_s", "rpo_target_s",
"lost_writes", "env", "target", "date" (ISO 8601 UTC), "commit" (the harness's, or null)}. Reading never
fails on the file's content: a line that is not JSON, not an object, misses a field, holds one of the wrong
type or was written by a newer format is skipped with one warning naming its line number.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path
from typing import Any

FORMAT = 1
TEXTS = ("run_id", "drill", "verdict", "env", "target", "date")
FIGURES = ("rto_s", "rto_target_s", "rpo_s", "rpo_target_s", "lost_writes")  # numbers, or null: not measured
FIELDS = (*TEXTS, *FIGURES, "commit")
DRILL_NAME = re.compile(r"[A-Z][A-Z0-9]*-[0-9]+")  # as the plan names drills; also the chart's file name
ROOT = Path(__file__).resolve().parents[2]


def default_path(reports_dir: Path | str) -> Path:
    """Where a run keeps the drill history unless told otherwise (--drill-history)."""
    return Path(reports_dir) / "drills" / "history.jsonl"


def commit() -> str | None:
    """The harness's git commit (12 hex digits), or None outside a git checkout."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


def entry(drill: str, section: dict[str, Any], env: str, target: str, at: dt.datetime,
          harness_commit: str | None) -> dict[str, Any]:
    """A history line for one drill run, from its summary section."""
    return {"format": FORMAT, "run_id": section.get("run_id"), "drill": drill, "verdict": section.get("verdict"),
            **{key: section.get(key) for key in FIGURES},
            "env": env, "target": target, "date": at.astimezone(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": harness_commit}


def append(path: Path, lines: list[dict[str, Any]]) -> None:
    """Add the lines at the end of the file (created with its folder when missing)."""
    if not lines:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))


def read(path: Path, drill: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The history's lines in file order (only `drill`'s when given), and a warning per line skipped."""
    entries: list[dict[str, Any]] = []
    warnings: list[str] = []
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except FileNotFoundError:
        return [], []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            warnings.append(f"{path}:{number}: skipped: not a JSON line")
            continue
        if not isinstance(line, dict):
            warnings.append(f"{path}:{number}: skipped: not a JSON object")
            continue
        version = line.get("format")
        if not isinstance(version, int) or isinstance(version, bool):
            warnings.append(f"{path}:{number}: skipped: no format number")
            continue
        if version > FORMAT:
            warnings.append(f"{path}:{number}: skipped: written in format {version} by a newer harness (this one "
                            f"reads format {FORMAT})")
            continue
        missing = [key for key in FIELDS if key not in line]
        if missing:
            warnings.append(f"{path}:{number}: skipped: missing {', '.join(missing)}")
            continue
        wrong = [key for key in TEXTS if not isinstance(line[key], str)]
        wrong += [key for key in FIGURES if line[key] is not None and not _figure_value(line[key])]
        if "drill" not in wrong and not DRILL_NAME.fullmatch(line["drill"]):
            wrong.append("drill")
        if wrong:
            warnings.append(f"{path}:{number}: skipped: {', '.join(wrong)} of the wrong type")
            continue
        if drill is None or line["drill"] == drill:
            entries.append(line)
    return entries, warnings


def _figure_value(value: Any) -> bool:
    """A number a chart and a table can show: finite, and not a boolean."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e12


def _figure(value: Any, target: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    shown = f"{value:g} s"
    return shown + (f" / {target:g}" if isinstance(target, (int, float)) and not isinstance(target, bool) else "")


def table(entries: list[dict[str, Any]]) -> list[str]:
    """The history for a terminal: one row per run, oldest first."""
    rows = [("date", "drill", "env", "verdict", "RTO / target", "RPO / target", "lost writes", "commit")]
    for line in entries:
        lost = line.get("lost_writes")
        rows.append((str(line.get("date", "")), str(line.get("drill", "")), str(line.get("env", "")),
                     str(line.get("verdict", "")), _figure(line.get("rto_s"), line.get("rto_target_s")),
                     _figure(line.get("rpo_s"), line.get("rpo_target_s")), "-" if lost is None else str(lost),
                     str(line.get("commit") or "-")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
