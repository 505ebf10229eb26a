"""The drill history as a table of lines: what a run adds, what reading keeps and skips (with a warning,
never an exception), and the terminal's table."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from harness.drills import history

AT = dt.datetime(2026, 12, 6, 7, 0, tzinfo=dt.timezone.utc)
SECTION = {"run_id": "DRILL-01-abc", "verdict": "pass", "rto_s": 4.2, "rto_target_s": 120, "rpo_s": 0.0,
           "rpo_target_s": 300, "lost_writes": 0, "message": "not kept", "journal": "/tmp/x.json"}


def line(**changes: object) -> dict[str, object]:
    return {**history.entry("DRILL-01", SECTION, "dev", "local", AT, "0123456789ab"), **changes}


def test_an_entry_keeps_the_figures_the_targets_and_where_and_when() -> None:
    assert line() == {"format": 1, "run_id": "DRILL-01-abc", "drill": "DRILL-01", "verdict": "pass", "rto_s": 4.2,
                      "rto_target_s": 120, "rpo_s": 0.0, "rpo_target_s": 300, "lost_writes": 0, "env": "dev",
                      "target": "local", "date": "2026-12-06T07:00:00+00:00", "commit": "0123456789ab"}


def test_append_adds_lines_and_read_returns_them_in_order(tmp_path: Path) -> None:
    path = tmp_path / "drills" / "history.jsonl"
    history.append(path, [line(run_id="a")])
    history.append(path, [line(run_id="b"), line(run_id="c", drill="DRILL-03")])
    history.append(path, [])
    entries, warnings = history.read(path)
    assert [e["run_id"] for e in entries] == ["a", "b", "c"] and warnings == []
    assert [e["run_id"] for e in history.read(path, "DRILL-03")[0]] == ["c"]


@pytest.mark.parametrize("raw, warning", [
    ("{not json", "skipped: not a JSON line"),
    ("[1, 2]", "skipped: not a JSON object"),
    (json.dumps({**line(), "format": "1"}), "skipped: no format number"),
    (json.dumps({**line(), "format": True}), "skipped: no format number"),
    (json.dumps({**line(), "format": 2}), "skipped: written in format 2 by a newer harness (this one reads format 1)"),
    (json.dumps({k: v for k, v in line().items() if k not in ("rto_s", "commit")}), "skipped: missing rto_s, commit"),
    (json.dumps({**line(), "drill": 1, "rto_s": "4 s", "lost_writes": True}),
     "skipped: drill, rto_s, lost_writes of the wrong type"),
    (json.dumps({**line(), "drill": "x/../../evil", "rpo_s": 10 ** 400}), "skipped: rpo_s, drill of the wrong type"),
])
def test_a_line_it_cannot_read_is_skipped_with_a_warning_naming_it(tmp_path: Path, raw: str, warning: str) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps(line(run_id="before")) + "\n" + raw + "\n\n" + json.dumps(line(run_id="after")) + "\n")
    entries, warnings = history.read(path)
    assert [e["run_id"] for e in entries] == ["before", "after"]
    assert warnings == [f"{path}:2: {warning}"]


def test_no_file_is_no_history(tmp_path: Path) -> None:
    assert history.read(tmp_path / "none.jsonl") == ([], [])


def test_the_table_shows_figures_against_targets_and_what_was_not_measured() -> None:
    rows = history.table([line(), line(verdict="fail", rto_s=None, rpo_s=None, rpo_target_s=None,
                                       lost_writes=None, commit=None)])
    assert rows[0].split() == ["date", "drill", "env", "verdict", "RTO", "/", "target", "RPO", "/", "target",
                               "lost", "writes", "commit"]
    assert rows[1].split() == ["2026-12-06T07:00:00+00:00", "DRILL-01", "dev", "pass", "4.2", "s", "/", "120", "0",
                               "s", "/", "300", "0", "0123456789ab"]
    assert rows[2].split() == ["2026-12-06T07:00:00+00:00", "DRILL-01", "dev", "fail", "-", "-", "-", "-"]


def test_a_file_saved_with_a_byte_order_mark_keeps_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps(line()) + "\n", encoding="utf-8-sig")
    assert history.read(path) == ([line()], [])
