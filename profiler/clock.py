"""One clock: Unix-epoch nanoseconds.

In-process probes time with ``time.perf_counter_ns()`` (CLOCK_MONOTONIC on Linux); a
session records bracketed (realtime, monotonic) anchor pairs to convert. A bracket reads
realtime, monotonic, realtime; the narrowest of several tries wins and its width is the
conversion's uncertainty. Monotonic time does not jump when NTP steps the wall clock, so
between two anchors the drift shows as a difference of their offsets (``drift_ns``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ClockAnchor:
    realtime_ns: int
    monotonic_ns: int
    uncertainty_ns: int

    @classmethod
    def take(cls, tries: int = 16) -> ClockAnchor:
        best: ClockAnchor | None = None
        for _ in range(tries):
            before = time.time_ns()
            mono = time.perf_counter_ns()
            after = time.time_ns()
            if best is None or after - before < best.uncertainty_ns:
                best = cls((before + after) // 2, mono, after - before)
        assert best is not None
        return best

    @property
    def offset_ns(self) -> int:
        """realtime - monotonic: add it to a monotonic reading to get epoch time."""
        return self.realtime_ns - self.monotonic_ns

    def to_epoch_ns(self, monotonic_ns: np.ndarray | int) -> np.ndarray | int:
        return monotonic_ns + self.offset_ns

    def to_monotonic_ns(self, epoch_ns: np.ndarray | int) -> np.ndarray | int:
        return epoch_ns - self.offset_ns

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> ClockAnchor:
        return cls(int(raw["realtime_ns"]), int(raw["monotonic_ns"]), int(raw["uncertainty_ns"]))


def best_anchor(anchors: list[ClockAnchor]) -> ClockAnchor:
    """The tightest bracket of several."""
    if not anchors:
        raise ValueError("no clock anchors")
    return min(anchors, key=lambda a: a.uncertainty_ns)


def drift_ns(first: ClockAnchor, second: ClockAnchor) -> int:
    """How far the wall clock moved against the monotonic clock between two anchors."""
    return second.offset_ns - first.offset_ns
