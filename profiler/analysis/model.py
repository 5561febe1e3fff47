"""The report model: findings, hotspots and the stage breakdown that analyzers produce and
renderers (text, Markdown, JSON, the TUI) display. Small dataclasses, no analysis here.

The JSON form (:meth:`Report.to_dict`) is a stable, documented schema (``SCHEMA_VERSION``):

``findings[]``: ``rule`` (kebab-case id), ``severity`` (critical/high/medium/low/info),
``title``, ``share`` (fraction of end-to-end request time — or of the server's busy time where
no requests exist — that the finding explains), ``evidence`` (measured figures, by name),
``events`` (where in the timeline the evidence lies: source, names/stages, time window),
``fix`` (``summary``, ``snippet``, ``knob`` for the sample server or null),
``estimated_gain`` (``throughput_x``, ``throughput_rps`` before/after, ``p50_ms`` before/after,
``method``, ``assumptions``) or null.

``stages[]`` (:class:`StageRow`) and ``hotspots[]`` (:class:`Hotspot`) come from the measures
layer (:mod:`profiler.measures`); each row names the denominator of its share (``basis``).
``sample_stages`` maps each py-spy stack id to the label attribution gave it, and
``thread_names`` each OS thread id to its Python name, so no viewer re-attributes samples or
reads raw artifacts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 2
Severity = Literal["critical", "high", "medium", "low", "info"]


def severity_for_share(share: float) -> Severity:
    """Severity from the share of time a finding explains (the buckets of Nsight Systems'
    expert-rule output: problems costing a third or more are what to fix first)."""
    if share >= 0.33:
        return "critical"
    if share >= 0.15:
        return "high"
    if share >= 0.05:
        return "medium"
    return "low"


@dataclass
class Gain:
    """What the fix is expected to buy, and how that was worked out."""

    throughput_x: float
    method: str  # "amdahl", "calibrated", ...
    throughput_rps_before: float | None = None
    throughput_rps_after: float | None = None
    p50_ms_before: float | None = None
    p50_ms_after: float | None = None
    assumptions: list[str] = field(default_factory=list)


@dataclass
class Fix:
    summary: str
    snippet: str = ""
    knob: dict[str, str] | None = None  # sample-server flags that apply the fix (prof verify)


@dataclass
class EventRef:
    """Where the evidence lies in the timeline, so a viewer can jump there."""

    source: str
    names: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    start_ns: int | None = None
    end_ns: int | None = None


@dataclass
class Finding:
    rule: str
    title: str
    share: float
    evidence: dict[str, Any]
    fix: Fix
    severity: Severity = "medium"
    estimated_gain: Gain | None = None
    events: list[EventRef] = field(default_factory=list)
    ranks_after: list[str] = field(default_factory=list)  # rules whose findings, if present, rank just before


@dataclass
class Hotspot:
    """One row of a source's hotspots: ``share`` is self time (or total, where self time means
    nothing) over ``basis``, the denominator every row of that source and kind shares."""

    source: str
    kind: str  # stage, function, ort-node, ort-op, torch-op, kernel, counter
    name: str
    total_ms: float
    share: float
    count: int = 0
    self_ms: float | None = None
    detail: str = ""
    basis: str = ""  # what the share is a fraction of: busy thread time, ORT node time, ...
    total_share: float | None = None  # inclusive time over the same basis (py-spy functions)
    location: str = ""  # file:line holding most of the self time


@dataclass
class StageRow:
    """One stage of the breakdown (:mod:`profiler.measures.stages` defines every figure)."""

    stage: str
    kind: str  # "work" (in the busy-time shares) or "wait"
    share: float | None  # of busy thread time; None for waits
    total_ms: float
    per_request_ms: float | None
    threads: float | None  # mean threads (or requests) in this stage at once: the wall-time view
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    count: int
    basis: str  # "stage spans" or "py-spy attribution"
    where: list[str] = field(default_factory=list)  # top functions and lines (waits, other)


@dataclass
class Report:
    session: str
    basis: str  # what finding shares are fractions of
    findings: list[Finding] = field(default_factory=list)
    hotspots: list[Hotspot] = field(default_factory=list)
    stages: list[StageRow] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)
    wire: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    rules_run: list[str] = field(default_factory=list)
    sample_stages: dict[int, str] = field(default_factory=dict)  # py-spy stack id -> attribution label
    thread_names: dict[int, str] = field(default_factory=dict)  # OS thread id -> Python thread name
    signatures: list[str] = field(default_factory=list)  # extra signature files the attribution used

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: integer keys (stack and thread ids) as strings, as JSON writes them."""
        data = asdict(self)
        for name in ("sample_stages", "thread_names"):
            data[name] = {str(k): v for k, v in data[name].items()}
        return {"schema_version": SCHEMA_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        findings = [Finding(**{**f, "fix": Fix(**f["fix"]),
                               "estimated_gain": Gain(**f["estimated_gain"]) if f.get("estimated_gain") else None,
                               "events": [EventRef(**e) for e in f.get("events", [])]})
                    for f in data.get("findings", [])]
        return cls(session=data["session"], basis=data["basis"], findings=findings,
                   hotspots=[Hotspot(**h) for h in data.get("hotspots", [])],
                   stages=[StageRow(**s) for s in data.get("stages", [])], load=data.get("load", {}),
                   wire=data.get("wire"), notes=data.get("notes", []), rules_run=data.get("rules_run", []),
                   sample_stages={int(k): str(v) for k, v in (data.get("sample_stages") or {}).items()},
                   thread_names={int(k): str(v) for k, v in (data.get("thread_names") or {}).items()},
                   signatures=list(data.get("signatures") or []))
