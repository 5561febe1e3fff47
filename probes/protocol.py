"""What every out-of-process probe is to the collector: started against a target, stopped
whatever happens, with its state (on with details, or off with the reason) recorded once. The
collector (:mod:`profiler.collect`) walks the registry (:mod:`probes.registry`) instead of
knowing each probe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol


class ProbeUnavailable(RuntimeError):
    """The probe cannot run here (no driver, no permission, not installed): its message is the
    reason, shown beside the probe as 'off'."""


@dataclass(frozen=True)
class Target:
    """What a probe is pointed at: the process, where its artifacts go, and the options a probe
    may take from the command line."""

    pid: int
    raw_dir: Callable[[str], Path]  # the session's raw/<probe>/ directory, created on demand
    family: tuple[int, ...] = ()  # the target's child processes
    interval_s: float = 0.1
    pyspy: Any = None  # probes.pyspy.PySpyOptions (the pyspy probe imports this module)
    wire_ports: frozenset[int] = frozenset()


class Probe(Protocol):
    """A started probe. ``start`` returns the details recorded beside 'on' or raises
    :class:`ProbeUnavailable`; ``stop`` ends it (and anything it started), returning details to
    add and the problems met."""

    def start(self) -> dict[str, Any]: ...

    def stop(self) -> tuple[dict[str, Any], list[str]]: ...
