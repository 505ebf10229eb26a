"""Exact latency statistics of a load run, kept as HDR histograms.

Locust rounds response times into coarse buckets before it computes percentiles; the verdicts (p95, p99
per endpoint) need the real values, merged exactly across worker processes. Every request's response
time is recorded in microseconds per phase and endpoint, into a histogram of 3 significant digits (a
value is off by at most 0.1 %); workers ship the counts and the master adds them up, and the results hold an HDR histogram per phase and endpoint (base64 of HDR's compressed form).
Nothing here imports Locust, so the pytest process can read and judge a results file with the same code
the generator used to write it.
"""
from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from hdrh.histogram import HdrHistogram

# Microseconds from 1 µs to 60 s with 3 significant digits: 0.1 % quantisation, far below any budget.
LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
RAMP = "ramp"
STEADY = "steady"
# A start this much behind its schedule is late; below it is the scheduler's own jitter.
LATE_TOLERANCE_S = 0.005


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def micros(value_ms: float) -> int:
    return int(value_ms * 1000 + 0.5)


def record_us(hist: HdrHistogram, value_us: int, count: int = 1) -> None:
    """Record a time in microseconds, clamped into the histogram's range rather than dropped, so a
    request slower than the range still counts."""
    hist.record_value(min(max(value_us, LOWEST_US), HIGHEST_US), count)


def encode(hist: HdrHistogram) -> str:
    return hist.encode().decode("ascii")


def decode(encoded: str) -> HdrHistogram:
    hist = new_histogram()
    if encoded:
        hist.decode_and_add(encoded.encode("ascii"))
    return hist


def merge_encoded(encoded: Iterable[str]) -> str:
    """One encoded histogram holding every sample of the given ones."""
    total = new_histogram()
    for item in encoded:
        if item:
            total.decode_and_add(item.encode("ascii"))
    return encode(total)


def percentile_ms(hist: HdrHistogram, percentile: float) -> float:
    """The nearest-rank percentile: the smallest recorded value with at least `percentile` % of the samples
    at or below it (the definition the smoke gate's p95 uses too). HDR's own rounds the rank to the nearest
    integer, which on a sparse tail (73 samples: rank 69 instead of 70) reports the value one rank lower."""
    total = hist.get_total_count()
    if not total:
        return 0.0
    return Ranked(hist).value_ms(max(1, math.ceil(round(percentile * total / 100, 9))))


class Ranked:
    """A histogram's recorded values in order with their cumulative counts, read once from its counts array
    (HDR's own recorded-value iterator takes a second for a few hundred samples): the value at any rank is
    then a binary search. Each value is its bucket's highest equivalent value, as that iterator gives."""

    def __init__(self, hist: HdrHistogram) -> None:
        self.values: list[float] = []
        self.cumulative: list[int] = []
        seen = 0
        for index, count in enumerate(hist.counts[:hist.counts_len]):
            if count:
                seen += count
                self.values.append(hist.get_highest_equivalent_value(hist.get_value_from_index(index)) / 1000)
                self.cumulative.append(seen)
        self.total = seen

    def value_ms(self, rank: int) -> float:
        """The `rank`-th smallest recorded value (from 1), in milliseconds."""
        return self.values[min(bisect.bisect_left(self.cumulative, rank), len(self.values) - 1)]

    def percentile_ms(self, percentile: float) -> float:
        return self.value_ms(max(1, math.ceil(round(percentile * self.total / 100, 9)))) if self.total else 0.0

    def interval_ms(self, percentile: float, z: float = 1.96) -> tuple[float, float] | None:
        """A distribution-free 95 % confidence interval of the percentile from the run's own samples (the
        order statistics whose ranks bound it: n·p ± z·sqrt(n·p·(1-p))); None when those ranks fall outside
        the samples (too few for that tail: a p99 needs about 400), as an interval cut at the largest sample
        would be narrower than the noise."""
        n = self.total
        p = percentile / 100
        spread = z * math.sqrt(n * p * (1 - p))
        low, high = math.floor(n * p - spread), math.ceil(n * p + spread)
        if n < 20 or low < 1 or high > n:
            return None
        return self.value_ms(low), self.value_ms(high)


def percentiles_ms(encoded: str, percentiles: Iterable[float] = (50, 95, 99)) -> dict[float, float]:
    """Percentiles in milliseconds of an encoded histogram, as the pytest side reads a results file."""
    hist = decode(encoded)
    return {p: percentile_ms(hist, p) for p in percentiles}


MARKS_POLL_S = 0.25  # how often a Locust master (or standalone process) reads the phase marks


def phase_of(elapsed_s: float, ramp_s: float, marks: list[tuple[float, str]] | None = None) -> str:
    """The phase a moment of the run belongs to. The ramp is not judged, so samples before ramp_s go to a
    phase of their own; after it, the latest phase another component marked (a drill's "during"), else
    steady. marks: (elapsed_s, name), sorted by time."""
    for at, name in reversed(marks or ()):
        if at <= elapsed_s:
            return name
    return RAMP if elapsed_s < ramp_s else STEADY


def phases(ramp_s: float, duration_s: float, marks: list[tuple[float, str]] | None = None) -> list[dict[str, Any]]:
    """The phases a run of duration_s went through, in order, as the results file lists them."""
    cuts = sorted({0.0, min(ramp_s, duration_s), *(min(at, duration_s) for at, _ in marks or [])})
    spans: list[dict[str, Any]] = []
    for start, end in zip(cuts, [*cuts[1:], duration_s]):
        if end <= start:
            continue
        name = phase_of(start, ramp_s, marks)
        if spans and spans[-1]["name"] == name:
            spans[-1]["end_s"] = round(end, 3)
        else:
            spans.append({"name": name, "start_s": round(start, 3), "end_s": round(end, 3)})
    return spans


def read_marks(path: Path | None, started: float) -> list[tuple[float, str]]:
    """Phase marks appended by another component ({"at": epoch, "phase": name} per line), as elapsed times."""
    if path is None or not path.exists():
        return []
    marks = []
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
            marks.append((float(item["at"]) - started, str(item["phase"])))
        except (ValueError, KeyError, TypeError):
            continue  # a line being written; it is read whole on the next poll
    return sorted(marks)


def mark_phase(path: Path, phase: str, at: float) -> None:
    """Start phase `phase` at epoch `at` in the run that reads `path` (its --phase-file)."""
    with Path(path).open("a") as out:
        out.write(json.dumps({"at": at, "phase": phase}) + "\n")


# Per-second latencies only feed the chart and the progress lines: a time's bucket is its 8 most
# significant bits, so from 256 us up a bucket is under 0.8 % wide (below, a microsecond), cheap enough
# to take on every request.
BUCKET_BITS = 8


def bucket_us(value_us: int) -> int:
    """The per-second bucket of a time in microseconds (its lower edge)."""
    shift = value_us.bit_length() - BUCKET_BITS
    return value_us >> shift << shift if shift > 0 else value_us


def bucket_percentile_ms(buckets: dict[int, int], percentile: float) -> float:
    """The nearest-rank percentile, reported as its bucket's upper edge (never below the true value)."""
    total = sum(buckets.values())
    if not total:
        return 0.0
    rank, seen = max(1, math.ceil(round(percentile * total / 100, 9))), 0
    for k in sorted(buckets):
        seen += buckets[k]
        if seen >= rank:
            break
    shift = k.bit_length() - BUCKET_BITS
    return (k + (1 << shift if shift > 0 else 1)) / 1000


def histogram(counts: dict[int, int]) -> HdrHistogram:
    hist = new_histogram()
    for value_us, count in counts.items():
        record_us(hist, value_us, count)
    return hist


def pairs(counts: dict[Any, int]) -> list[Any]:
    """A dict as a flat list (key, count, key, count ...), the compact form for Locust's messages."""
    return [item for pair in counts.items() for item in pair]


def add_pairs(counts: dict[Any, int], flat: list[Any]) -> None:
    items = iter(flat)
    for key, count in zip(items, items):
        counts[key] = counts.get(key, 0) + count


@dataclass
class Second:
    """One second of the run, for the chart and the progress lines."""
    buckets: dict[int, int] = field(default_factory=dict)  # bucket_us(us) -> requests
    failures: int = 0
    cpu: float = 0.0  # the busiest generator process's CPU in this second (1.0 = one core)


# A request only counts itself, in two flat dicts: its time per phase and endpoint (to the precision the
# histograms keep), and its time's bucket per second. The HDR histograms are built once, when the results
# are written. In a worker pushing thousands of requests per second beside bare Locust, every operation
# on this path shows: recording into HDR histograms on each request (6 us of Python) cost a tenth of the
# throughput, and folding counts into them at every report (every 3 s) still cost twice the counting.
@dataclass
class Tally:
    """Everything one process observed, or (on the master) everything merged so far.

    Workers send their tally and start afresh after each report, so every sample crosses the wire once
    and merging is plain addition (maxima for the CPU figures)."""
    counts: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (phase, endpoint, us) -> requests
    # When paced: (phase, endpoint, us from the intended start) -> requests, and lag us -> starts.
    counts_intended: dict[tuple[str, str, int], int] = field(default_factory=dict)
    lags: dict[int, int] = field(default_factory=dict)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)  # (phase, endpoint) -> failed requests
    seconds: dict[int, Second] = field(default_factory=dict)
    recent: dict[tuple[int, int], int] = field(default_factory=dict)  # (second, bucket) -> requests, not in `seconds` yet
    loop_lags: dict[int, int] = field(default_factory=dict)  # how late the event loop's timer fired, us -> times
    late_starts: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # generator process -> its highest CPU share
    busy: dict[str, float] = field(default_factory=dict)  # generator process -> its event loop's highest busy share

    def record(self, name: str, elapsed_s: float, ramp_s: float, response_ms: float, failed: bool,
               lag_s: float | None = None, marks: list[tuple[float, str]] | None = None) -> None:
        """One request: elapsed_s since the test started; lag_s how far behind its intended start it
        was sent (None when the run is not paced)."""
        # phase_of, without the call when no other component marked a phase. A marked phase (a drill's
        # fault) owns what was answered in it: a request in flight at the mark is filed under the new phase.
        phase = phase_of(elapsed_s + response_ms / 1000, ramp_s, marks) if marks \
            else RAMP if elapsed_s < ramp_s else STEADY
        us = int(response_ms * 1000 + 0.5) if response_ms > 0 else 0
        shift = us.bit_length() - BUCKET_BITS
        # The histograms keep a time's 11 most significant bits (3 significant digits): counted rounded
        # down to them, the times build the same histograms from fewer keys.
        key = (phase, name, (us >> (shift - 3)) << (shift - 3) if shift > 3 else us)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        t = int(elapsed_s) if elapsed_s > 0 else 0
        bucket = (t, us >> shift << shift if shift > 0 else us)
        recent = self.recent
        recent[bucket] = recent.get(bucket, 0) + 1
        if failed:
            self.failures[key[:2]] = self.failures.get(key[:2], 0) + 1
            self.second(t).failures += 1
        if lag_s is not None:  # unpaced, the intended start is the actual one: `summary` reads `hist`
            late = micros(max(lag_s, 0.0) * 1000)
            key = (phase, name, us + late)
            self.counts_intended[key] = self.counts_intended.get(key, 0) + 1
            self.lags[late] = self.lags.get(late, 0) + 1
            self.late_starts += lag_s > LATE_TOLERANCE_S

    def fold(self) -> None:
        """Bring the recent seconds' counts into their buckets; every reader of `seconds` calls this first."""
        for (t, bucket), n in self.recent.items():
            buckets = self.second(t).buckets
            buckets[bucket] = buckets.get(bucket, 0) + n
        self.recent.clear()

    def second(self, t: int) -> Second:
        second = self.seconds.get(t)
        if second is None:
            second = self.seconds[t] = Second()
        return second

    def record_generator(self, process: str, elapsed_s: float, cpu: float, busy: float, loop_lag_s: float) -> None:
        """The generator measuring itself: a process's CPU share and its event loop's busy share over the
        last sample, and how late the loop woke up against a timer (all grow when it is saturated)."""
        self.cpu[process] = max(self.cpu.get(process, 0.0), cpu)
        self.busy[process] = max(self.busy.get(process, 0.0), busy)
        second = self.second(int(elapsed_s) if elapsed_s > 0 else 0)
        second.cpu = max(second.cpu, cpu)
        late = micros(max(loop_lag_s, 0.0) * 1000)
        self.loop_lags[late] = self.loop_lags.get(late, 0) + 1

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-able form for Locust's worker report: per phase and endpoint, its times as flat
        (us, count) pairs."""
        self.fold()
        cells: dict[tuple[str, str], list[list[int]]] = {}
        for which, counts in enumerate((self.counts, self.counts_intended)):
            for (phase, name, us), n in counts.items():
                cell = cells.get((phase, name))
                if cell is None:
                    cell = cells[(phase, name)] = [[], []]
                cell[which] += (us, n)
        return {
            "cells": [[phase, name, times, intended, self.failures.get((phase, name), 0)]
                      for (phase, name), (times, intended) in cells.items()],
            "seconds": [[t, pairs(s.buckets), s.failures, s.cpu] for t, s in self.seconds.items()],
            "lags": pairs(self.lags), "loop_lags": pairs(self.loop_lags), "late_starts": self.late_starts,
            "cpu": self.cpu, "busy": self.busy,
        }

    def add_wire(self, wire: dict[str, Any]) -> None:
        for phase, name, times, intended, failures in wire["cells"]:
            for counts, flat in ((self.counts, times), (self.counts_intended, intended)):
                items = iter(flat)
                for us, n in zip(items, items):
                    key = (phase, name, us)
                    counts[key] = counts.get(key, 0) + n
            if failures:
                self.failures[(phase, name)] = self.failures.get((phase, name), 0) + failures
        for t, buckets, failures, cpu in wire["seconds"]:
            second = self.second(t)
            add_pairs(second.buckets, buckets)
            second.failures += failures
            second.cpu = max(second.cpu, cpu)
        add_pairs(self.lags, wire["lags"])
        add_pairs(self.loop_lags, wire["loop_lags"])
        self.late_starts += wire["late_starts"]
        for process, cpu in wire["cpu"].items():
            self.cpu[process] = max(self.cpu.get(process, 0.0), cpu)
        for process, busy in wire["busy"].items():
            self.busy[process] = max(self.busy.get(process, 0.0), busy)

    def requests(self) -> int:
        return sum(self.counts.values())


def summary(hist: HdrHistogram, hist_intended: HdrHistogram, failures: int, span_s: float) -> dict[str, Any]:
    requests = hist.get_total_count()
    if not hist_intended.get_total_count():
        hist_intended = hist
    return {"requests": requests, "failures": failures,
            "error_ratio": round(failures / requests, 5) if requests else 0.0,
            "rps": round(requests / span_s, 3) if span_s > 0 else 0.0,
            "p50_ms": percentile_ms(hist, 50), "p95_ms": percentile_ms(hist, 95),
            "p99_ms": percentile_ms(hist, 99), "max_ms": hist.get_max_value() / 1000 if requests else 0.0,
            "p99_intended_ms": percentile_ms(hist_intended, 99),
            "hist": encode(hist), "hist_intended": encode(hist_intended)}


def by_cell(counts: dict[tuple[str, str, int], int]) -> dict[tuple[str, str], HdrHistogram]:
    cells: dict[tuple[str, str], dict[int, int]] = {}
    for (phase, name, us), n in counts.items():
        cells.setdefault((phase, name), {})[us] = n
    return {key: histogram(values) for key, values in cells.items()}


def results(tally: Tally, *, complete: bool, started_at: str, ended_at: str, duration_s: float, ramp_s: float,
            workers: int, worker_requests: dict[str, int] | None = None,
            marks: list[tuple[float, str]] | None = None) -> dict[str, Any]:
    """The results file's content (its shape is described in docs/design.md, "Load measurement")."""
    tally.fold()
    spans: dict[str, float] = {}
    listed = phases(ramp_s, duration_s, marks)
    for span in listed:
        spans[span["name"]] = spans.get(span["name"], 0.0) + span["end_s"] - span["start_s"]
    hists, hists_intended = by_cell(tally.counts), by_cell(tally.counts_intended)
    endpoints: dict[str, dict[str, Any]] = {}
    overall: dict[str, Any] = {}
    for phase in sorted({phase for phase, _ in hists}):
        total, total_intended, failures = new_histogram(), new_histogram(), 0
        endpoints[phase] = {}
        for name in sorted(name for cell_phase, name in hists if cell_phase == phase):
            hist, hist_intended = hists[(phase, name)], hists_intended.get((phase, name), new_histogram())
            cell_failures = tally.failures.get((phase, name), 0)
            endpoints[phase][name] = summary(hist, hist_intended, cell_failures, spans.get(phase, 0.0))
            total.add(hist)
            total_intended.add(hist_intended if hist_intended.get_total_count() else hist)
            failures += cell_failures
        overall[phase] = summary(total, total_intended, failures, spans.get(phase, 0.0))
    lag_p99_ms = percentile_ms(histogram(tally.lags), 99)
    timeline = [{"t_s": t, "requests": sum(s.buckets.values()), "failures": s.failures,
                 "p50_ms": bucket_percentile_ms(s.buckets, 50), "p95_ms": bucket_percentile_ms(s.buckets, 95),
                 "cpu": round(s.cpu, 3)}
                for t, s in sorted(tally.seconds.items())]
    return {"complete": complete, "started_at": started_at, "ended_at": ended_at, "workers": workers,
            "worker_requests": worker_requests or {}, "phases": listed,
            "endpoints": endpoints, "overall": overall, "timeline": timeline,
            "schedule": {"late_starts": tally.late_starts, "lag_p99_ms": lag_p99_ms},
            "generator": {"cpu_max": round(max(tally.cpu.values(), default=0.0), 3),
                          "cpu_by_process": {k: round(v, 3) for k, v in sorted(tally.cpu.items())},
                          "busy_max": round(max(tally.busy.values(), default=0.0), 3),
                          "busy_by_process": {k: round(v, 3) for k, v in sorted(tally.busy.items())},
                          "loop_lag_p99_ms": percentile_ms(histogram(tally.loop_lags), 99),
                          "lag_p99_ms": lag_p99_ms}}


def window(tally: Tally, first_s: int, last_s: int) -> dict[str, float]:
    """Requests per second, p95, error ratio and generator CPU over the seconds [first_s, last_s), for
    progress lines."""
    tally.fold()
    buckets: dict[int, int] = {}
    failures, cpu = 0, 0.0
    for t in range(first_s, last_s):
        if t in tally.seconds:
            for k, n in tally.seconds[t].buckets.items():
                buckets[k] = buckets.get(k, 0) + n
            failures += tally.seconds[t].failures
            cpu = max(cpu, tally.seconds[t].cpu)
    requests = sum(buckets.values())
    span = max(last_s - first_s, 1)
    return {"rps": round(requests / span, 3), "p95_ms": bucket_percentile_ms(buckets, 95),
            "error_ratio": round(failures / requests, 4) if requests else 0.0, "cpu": round(cpu, 3)}


def read_results(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
