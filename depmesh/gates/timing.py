"""Timing a model so that the verdict does not move with the machine's load.

A latency gate that reads wall-clock time judges the machine, not the model:
on a shared two-core machine the same model version measured 22-110 ms alone
and 1,562-3,068 ms beside other work. Three things make the measurement the
model's own:

1. **One thread.** Predictions run under ``threadpool_limits(1)``: OpenMP
   pools that spin up a thread per core fight every other process for the
   cores and turn a busy machine into a tenfold slowdown.
2. **Time spent waiting for a CPU is not the model's.** Linux counts, per
   thread, the nanoseconds it was runnable but waiting on a run queue
   (``/proc/thread-self/schedstat``, second field). Each call's latency is its
   wall-clock time minus that wait. Time the model spends sleeping or waiting
   on I/O is not run-queue time, so a model that is slow for its own reasons
   stays slow.
3. **Several rounds, the fastest counts, a fail is confirmed.** Load only
   ever adds time, so the lowest p95 over rounds is the best estimate of the
   model's own; a gate re-measures before it fails.

A reference workload (a fixed amount of pure-Python arithmetic) is timed the
same way at the same moment, and reported beside the verdict with the
run-queue wait share: the calibration and the noise a reader needs to trust
the figure. Where schedstat is missing (not Linux), wall time is used and the
metadata says so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

SCHEDSTAT = "/proc/thread-self/schedstat"


def _runqueue_wait_ns() -> int | None:
    """Nanoseconds this thread has waited for a CPU since it started, or None where Linux does not say."""
    try:
        with open(SCHEDSTAT, "rb") as fh:
            return int(fh.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None


def load_correction_available() -> bool:
    return _runqueue_wait_ns() is not None


@dataclass
class Timings:
    """Milliseconds per call: ``own`` (wall minus run-queue wait) and ``wall``."""

    own: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    def add(self, wall_ms: float, wait_ms: float) -> None:
        self.wall.append(wall_ms)
        self.own.append(max(0.0, wall_ms - wait_ms))

    def percentiles(self, which: str = "own") -> tuple[float, float, float]:
        import numpy as np

        values = self.own if which == "own" else self.wall
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return float(p50), float(p95), float(p99)

    @property
    def wait_share(self) -> float:
        """The share of wall-clock time spent waiting for a CPU (other processes' load)."""
        total = sum(self.wall)
        return 0.0 if total <= 0 else max(0.0, 1 - sum(self.own) / total)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def time_call(fn: Callable[[], Any], timings: Timings) -> Any:
    """Call ``fn`` once, recording its wall and own time."""
    wait_before = _runqueue_wait_ns()
    started = time.perf_counter_ns()
    try:
        return fn()
    finally:
        wall = time.perf_counter_ns() - started
        wait_after = _runqueue_wait_ns()
        wait = (wait_after - wait_before) if wait_before is not None and wait_after is not None else 0
        timings.add(wall / 1e6, min(wait, wall) / 1e6)


REFERENCE_LOOPS = 200_000


def reference_workload() -> int:
    """A fixed amount of pure-Python arithmetic (about 5-10 ms on a current core)."""
    total = 0
    for i in range(REFERENCE_LOOPS):
        total = (total + i * i) % 1_000_003
    return total


def calibrate(rounds: int = 3) -> dict[str, float]:
    """The reference workload timed now: own and wall milliseconds (the best
    of ``rounds``) and the run-queue wait share, for the check's metadata."""
    timings = Timings()
    for _ in range(rounds):
        time_call(reference_workload, timings)
    return {"reference_own_ms": round(min(timings.own), 3), "reference_wall_ms": round(min(timings.wall), 3),
            "reference_wait_share": round(timings.wait_share, 3)}
