"""Every probe prof knows, by name, in one place: what timeline sources its artifacts become,
whether it is in the default set, and how it is switched on. ``--probes``, the collector, the
ingest and the summary all read this table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    sources: tuple[str, ...]  # timeline sources its artifacts are ingested as
    default: bool  # in the default set (chosen on benchmarks/overhead.py's evidence)
    summary: str


PROBE_SPECS: tuple[ProbeSpec, ...] = (
    ProbeSpec("pyspy", ("pyspy",), True, "py-spy timed samples and GIL snapshots of the target's threads"),
    ProbeSpec("proc", ("proc",), True, "psutil counters of the target and its children, per thread"),
    ProbeSpec("nvml", ("nvml",), True, "NVML GPU utilization and memory, per process where the driver tells"),
    ProbeSpec("http", ("http",), True, "the target's HTTP/1.1 traffic, passively from the wire"),
    ProbeSpec("stages", ("stages",), True, "the server's own stage spans (sample server, or the prof agent)"),
    ProbeSpec("framework", ("ort", "torch"), False, "ONNX Runtime per-node profiling or torch.profiler"),
)
PROBES: tuple[str, ...] = tuple(spec.name for spec in PROBE_SPECS)
DEFAULT_PROBES = frozenset(spec.name for spec in PROBE_SPECS if spec.default)
_BY_NAME = {spec.name: spec for spec in PROBE_SPECS}


def sources_of(probe: str) -> tuple[str, ...]:
    """The timeline sources a probe (or a source-only name, such as ``loadgen``) produces."""
    spec = _BY_NAME.get(probe)
    return spec.sources if spec else (probe,)
