"""The rule contract. A rule looks at the measured evidence and returns :class:`Verdict`\\ s; the
driver (:mod:`profiler.analysis.diagnose`) turns each into a :class:`Finding` — the share of
request time it explains, its severity, its estimated gain — so that every rule's figures mean
the same thing.

The one unit: ``Verdict.removed`` is the **fraction of the server's busy time** (its work summed
over requests or threads: :attr:`AnalysisContext.busy_ns`) that the fix removes. Evidence measured
as a fraction of something else converts first: a fraction of a wall-time window (a GPU idle,
blocked on syncs) is taken as the same fraction of busy time, the window being the work;
a fraction of end-to-end request time goes through :meth:`AnalysisContext.busy_fraction` — or,
for time that is waiting rather than work (``of_latency``), stays a fraction of request time.

A rule never writes its own id: the registry entry (:class:`Rule`) holds it, once. Ranking is
by share; a verdict that is the consequence of another rule's finding names that rule in
``ranks_after`` and the driver puts that finding just before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from profiler.analysis.model import EventRef, Finding, Fix, severity_for_share

if TYPE_CHECKING:
    from profiler.analysis.context import AnalysisContext


@dataclass
class Verdict:
    """What a rule concludes from its evidence (see the module doc for ``removed``).

    ``gain_method`` names how the gain is worked out from ``removed`` (``amdahl``, ``calibrated``,
    ``measured factor``); None when the rule has no model of the fix's effect, so no gain is
    estimated. ``assumptions`` say what the gain takes for granted."""

    title: str
    removed: float
    evidence: dict[str, Any]
    fix: Fix
    events: list[EventRef] = field(default_factory=list)
    gain_method: str | None = "amdahl"
    assumptions: list[str] = field(default_factory=list)
    ranks_after: tuple[str, ...] = ()
    # True: ``removed`` is a fraction of end-to-end request time instead (a wait, not work: a
    # downstream call, a blocking write); under closed-loop clients throughput rises as it goes
    of_latency: bool = False
    # True: ``removed`` is CPU work the fix takes away (the server needs less CPU per request);
    # False: the same work runs more at once or waits less (a queue, the GIL, a wait); None: as
    # ``of_latency`` says (a wait frees no CPU). The machine's cores bound the gain either way.
    frees_cpu: bool | None = None


Check = Callable[["AnalysisContext"], list[Verdict]]


@dataclass(frozen=True)
class Rule:
    """A registry entry: the rule's stable kebab-case id and its check."""

    id: str
    check: Check


def to_finding(ctx: AnalysisContext, rule_id: str, verdict: Verdict) -> Finding:
    """The finding of a verdict: share of request time, severity and gain, one way for all."""
    removed = min(max(float(verdict.removed), 0.0), 1.0)
    share = removed if verdict.of_latency else ctx.e2e_share(removed)
    frees_cpu = (not verdict.of_latency) if verdict.frees_cpu is None else verdict.frees_cpu
    gain = ctx.amdahl(removed, verdict.assumptions, verdict.gain_method, verdict.of_latency, frees_cpu) \
        if verdict.gain_method else None
    return Finding(rule=rule_id, title=verdict.title, share=round(float(share), 4), evidence=dict(verdict.evidence),
                   fix=verdict.fix, severity=severity_for_share(share), estimated_gain=gain, events=verdict.events,
                   ranks_after=list(verdict.ranks_after))


def ranked(findings: list[Finding]) -> list[Finding]:
    """Largest share first; then each finding that ``ranks_after`` another present one has that
    one moved just before it (removing the cause removes the consequence)."""
    ordered = sorted(findings, key=lambda f: -f.share)
    for consequence in [f for f in ordered if f.ranks_after]:
        for cause_id in consequence.ranks_after:
            cause = next((f for f in ordered if f.rule == cause_id), None)
            if cause is None or ordered.index(cause) < ordered.index(consequence):
                continue
            ordered.remove(cause)
            ordered.insert(ordered.index(consequence), cause)
    return ordered
