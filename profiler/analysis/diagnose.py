"""Session -> Report: the measures of the session, every rule of the registry run on one
analysis context, each verdict made a finding the one way (:func:`profiler.rules.contract.
to_finding`), ranked by the share of time it explains."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from profiler.analysis.attribution import attribute_samples, load_signatures, signature_files
from profiler.analysis.calibration_policy import CalibrationPolicy
from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import Finding, Report
from profiler.measures import Measures
from profiler.rules import RULES, Rule
from profiler.rules.contract import ranked, to_finding
from profiler.session import Session


def diagnose(session: Session, policy: CalibrationPolicy | None = None, signatures: Sequence[Path] = (),
             rules: Sequence[Rule] = RULES, calibration_loader: Callable[[], Any] | None = None) -> Report:
    """The report of a loaded session. ``policy`` says whether gains may use this host's model
    calibration (and whether to measure it); ``calibration_loader`` gives one directly (tests).
    ``signatures``: extra stack-signature files for the attribution (a bad one raises
    ValueError). A rule that fails leaves a note, never the report."""
    policy = policy or CalibrationPolicy("off", host_timings=True)
    ctx = AnalysisContext(session.timeline, session.stacks, session.meta, attribute=attribution(signatures),
                          calibration_loader=calibration_loader or policy.loader(session.meta),
                          host_timings=policy.host_timings)
    findings: list[Finding] = []
    notes = list(session.notes)
    for rule in rules:
        try:
            findings.extend(to_finding(ctx, rule.id, verdict) for verdict in rule.check(ctx))
        except Exception as exc:  # one rule's bug must not hide the others' findings
            notes.append(f"rule {rule.id} failed: {type(exc).__name__}: {exc}")
    findings = ranked(findings)
    notes += after_the_cache(findings)
    figures = ctx.figures()
    return Report(session=str(session.path), basis=_basis(ctx), findings=findings, hotspots=figures.hotspots,
                  stages=figures.stages, load={**figures.load, "stage_basis": figures.stage_basis,
                                               "saturated": ctx.saturated} if figures.load else {},
                  wire=figures.wire, notes=notes + ctx.notes, rules_run=[rule.id for rule in rules],
                  sample_stages=figures.sample_stages, thread_names={int(k): str(v) for k, v in (session.meta.get("thread_names") or {}).items()},
                  signatures=[str(p) for p in signature_files(signatures)])


def after_the_cache(findings: list[Finding]) -> list[str]:
    """When the cache finding says the load looks unrepresentative, the bottleneck of the work a
    cache cannot remove: the next finding, named in the cache finding's evidence and a note."""
    cache = next((f for f in findings if f.rule == "cache-opportunity"
                  and f.evidence.get("load_looks_unrepresentative")), None)
    if cache is None:
        return []
    rest = [f for f in findings if f is not cache]
    cache.evidence["after_the_cache"] = [f.rule for f in rest[:3]]
    if not rest:
        return [f"the load looks unrepresentative ({cache.evidence['distinct_bodies']} distinct bodies in "
                f"{cache.evidence['bodies']} requests); after the cache no other rule saw a bottleneck"]
    return [f"the load looks unrepresentative ({cache.evidence['distinct_bodies']} distinct bodies in "
            f"{cache.evidence['bodies']} requests); after the cache: {rest[0].title} ({rest[0].rule})"]


def attribution(signatures: Sequence[Path] = ()) -> Callable:
    """Stage labels for py-spy rows (the samples and the GIL snapshots' thread stacks) from the
    signature table with these extra files."""
    return partial(attribute_samples, signatures=load_signatures(signatures), kinds=("sample", "instant"))


def measures_of(session: Session, signatures: Sequence[Path] = ()) -> Measures:
    """The session's measures alone (no rules): what ``prof diff`` compares."""
    return Measures(session.timeline, session.stacks, session.meta, attribute=attribution(signatures))


def _basis(ctx: AnalysisContext) -> str:
    """What finding shares are fractions of."""
    if ctx.requests is not None and ctx.requests.total_ns > 0:
        return f"end-to-end request time ({ctx.requests.source})"
    return "the server's busy time" if ctx.service_ns > 0 else "the trace's wall time"
