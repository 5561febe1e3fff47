"""Session -> Report: run every rule of the registry on one analysis context, rank the
findings by the share of time they explain, and add the hotspots and stage breakdown."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from profiler.analysis.context import AnalysisContext
from profiler.analysis.hotspots import basis, hotspots, stage_rows
from profiler.analysis.model import Finding, Report
from profiler.session import Session

if TYPE_CHECKING:
    from profiler.rules import RuleCheck


def default_attribution() -> Callable | None:
    """Stage labels for py-spy rows: the samples and the GIL snapshots' thread stacks."""
    from profiler.analysis.attribution import attribute_samples

    return partial(attribute_samples, kinds=("sample", "instant"))


def diagnose(session: Session, calibration_loader: Callable[[], Any] | None = None,
             attribute: Callable | None = None, rules: dict[str, RuleCheck] | None = None) -> Report:
    """The report of a loaded session. A rule that fails leaves a note, never the report."""
    if rules is None:
        from profiler.rules import RULES

        rules = RULES
    ctx = AnalysisContext(session.timeline, session.stacks, session.meta,
                          attribute=attribute if attribute is not None else default_attribution(),
                          calibration_loader=calibration_loader)
    findings: list[Finding] = []
    notes = list(session.notes)
    for rule_id, check in rules.items():
        try:
            findings.extend(check(session.timeline, ctx))
        except Exception as exc:  # one rule's bug must not hide the others' findings
            notes.append(f"rule {rule_id} failed: {type(exc).__name__}: {exc}")
    findings.sort(key=lambda f: -f.share)
    if "gil-contention" in rules:
        from profiler.rules.gil import causes_first

        findings = causes_first(findings)
    label, _ = basis(ctx)
    report = Report(session=str(session.path), basis=label, findings=findings, hotspots=hotspots(ctx),
                    stages=stage_rows(ctx), load=_load(ctx), wire=asdict(ctx.wire) if ctx.wire else None,
                    notes=notes + ctx.notes, rules_run=list(rules))
    return report


def _load(ctx: AnalysisContext) -> dict[str, Any]:
    requests = ctx.requests
    if requests is None:
        return {}
    return {"source": requests.source, "requests": requests.count, "throughput_rps": round(requests.throughput_rps, 2),
            "p50_ms": round(requests.percentile(50), 2), "p95_ms": round(requests.percentile(95), 2),
            "p99_ms": round(requests.percentile(99), 2), "window_s": round(requests.window_s, 2),
            "in_flight_mean": round(requests.total_ns / (requests.window_s * 1e9), 2) if requests.window_s else None,
            "stage_basis": ctx.stage_basis, "saturated": ctx.saturated}
