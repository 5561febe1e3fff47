"""Every probe prof knows, by name, in one place: what timeline sources its artifacts become,
whether it is in the default set, and how it starts. ``--probes``, the collector, the ingest and
the summary all read this table; ``tests/test_probe_registry.py`` checks that every source here
has an ingester."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from probes.http.probe import HttpProbe
from probes.nvml import NvmlProbe
from probes.proc import ProcProbe
from probes.protocol import Probe, Target
from probes.pyspy import PySpyProbe


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    sources: tuple[str, ...]  # timeline sources (and raw/ directories) its artifacts are ingested as
    default: bool  # in the default set (chosen on benchmarks/overhead.py's evidence)
    summary: str
    # How the collector starts it from outside the target; None: switched on inside the target
    # (the sample server's own knobs, or the prof agent).
    start: Callable[[Target], Probe] | None = None


# The order is the collector's: started in this order, stopped in it too (the wire last, so the
# window's final responses are still captured).
PROBE_SPECS: tuple[ProbeSpec, ...] = (
    ProbeSpec("pyspy", ("pyspy",), True, "py-spy timed samples and GIL snapshots of the target's threads",
              PySpyProbe.for_target),
    ProbeSpec("proc", ("proc",), True, "psutil counters of the target and its children, per thread",
              ProcProbe.for_target),
    ProbeSpec("nvml", ("nvml",), True, "NVML GPU utilization and memory, per process where the driver tells",
              NvmlProbe.for_target),
    ProbeSpec("http", ("http",), True, "the target's HTTP/1.1 traffic, passively from the wire", HttpProbe.for_target),
    ProbeSpec("stages", ("stages",), True, "the server's own stage spans (sample server, or the prof agent)"),
    ProbeSpec("framework", ("ort", "torch"), False, "ONNX Runtime per-node profiling or torch.profiler"),
)
PROBES: tuple[str, ...] = tuple(spec.name for spec in PROBE_SPECS)
DEFAULT_PROBES = frozenset(spec.name for spec in PROBE_SPECS if spec.default)
# Sources a session can hold that no probe above collects: the load generator prof drives, and
# profiles imported with ``prof import``.
OTHER_SOURCES = ("loadgen", "scalene")
_BY_NAME = {spec.name: spec for spec in PROBE_SPECS}


def sources_of(probe: str) -> tuple[str, ...]:
    """The timeline sources a probe (or a source-only name, such as ``loadgen``) produces."""
    spec = _BY_NAME.get(probe)
    return spec.sources if spec else (probe,)
