"""A judge's verdict, the one type every suite's judges return.

pass; fail; inconclusive (measured, but not enough to judge: a generator that may have spoiled the figure,
too few samples; never a pass); error (could not be observed or measured: neither pass nor fail); skip
(not observable here, with the reason). `evidence` is what the judgement was based on, `figures` the
measured values a report shows beside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUSES = ("pass", "fail", "inconclusive", "error", "skip")


@dataclass(frozen=True)
class Verdict:
    status: str
    message: str
    evidence: Any = None
    figures: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def ok(self) -> bool:
        return self.status == "pass"

    @property
    def observed(self) -> bool:
        """False when the check could not be observed at all: an ERROR, neither a pass nor a failure."""
        return self.status != "error"


def passed(message: str, evidence: Any = None) -> Verdict:
    return Verdict("pass", message, evidence)


def failed(message: str, evidence: Any = None) -> Verdict:
    return Verdict("fail", message, evidence)
