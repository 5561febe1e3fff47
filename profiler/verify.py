"""Estimated vs measured: re-run the sample server with each finding's fix applied, under the
load of the original session, beside a baseline run with the original knobs (alternated
round by round, so both see the same machine), and compare the measured gain with the
estimate. No profiler is attached during these runs: they measure the server alone."""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass, field
from typing import Callable

from profiler.analysis.model import Finding
from samples.loadgen.runner import LoadRunner, LoadSpec
from samples.loadgen.summary import records_figures
from samples.loadgen.workload import ImageMix
from samples.sample_server.process import ServerProcess

LOAD_FLAGS = {"--payload": "payload", "--concurrency": "concurrency", "--duplicates": "duplicates",
              "--image-sizes": "image_sizes"}
AGREEMENT = 0.30  # an estimate within ±30 % of the measured gain counts as right


@dataclass
class Variant:
    label: str
    knobs: list[str]
    load: dict
    finding: Finding | None = None
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)


@dataclass
class Outcome:
    rule: str
    change: str
    estimated_x: float | None
    measured_x: float
    estimated_p50_ms: float | None
    measured_p50_ms: float
    baseline_p50_ms: float

    @property
    def error(self) -> float | None:
        """Relative error of the estimated gain against the measured one (gain = x - 1 is
        too small a base near 1; the throughput multiplier is what users weigh)."""
        if self.estimated_x is None or self.measured_x <= 0:
            return None
        return (self.estimated_x - self.measured_x) / self.measured_x

    @property
    def agrees(self) -> bool | None:
        error = self.error
        return None if error is None else abs(error) <= AGREEMENT


def with_knobs(knobs: list[str], changes: dict[str, str]) -> list[str]:
    """``knobs`` with each flag of ``changes`` set (replaced if present, else appended)."""
    out = list(knobs)
    for flag, value in changes.items():
        if flag in out and out.index(flag) + 1 < len(out):
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def variants_for(findings: list[Finding], knobs: list[str], load: dict) -> list[Variant]:
    """The baseline and one variant per finding whose fix is a sample-server knob or a load
    option (the payload format a client sends)."""
    variants = [Variant("baseline", knobs, load)]
    for finding in findings:
        if not finding.fix.knob:
            continue
        server = {k: v for k, v in finding.fix.knob.items() if k not in LOAD_FLAGS}
        client = {LOAD_FLAGS[k]: v for k, v in finding.fix.knob.items() if k in LOAD_FLAGS}
        changed = with_knobs(knobs, server)
        if changed == knobs and not client:
            continue  # the knob is already set that way: nothing to verify
        label = " ".join(f"{k} {v}" for k, v in finding.fix.knob.items())
        variants.append(Variant(label, changed, {**load, **client}, finding))
    return variants


def measure(variant: Variant, duration_s: float, warmup_s: float) -> tuple[float, float]:
    """(throughput req/s, p50 ms) of one fresh server under the variant's load."""
    load = variant.load
    with ServerProcess(variant.knobs) as server:
        spec = LoadSpec(url=f"{server.url}/classify", concurrency=int(load.get("concurrency") or 8),
                        rate=load.get("rate"), duration_s=duration_s, requests=None, warmup_s=warmup_s,
                        payload=load.get("payload", "raw"), accept_msgpack=load.get("accept") == "msgpack",
                        timeout_s=float(load.get("timeout", 30.0)), seed=int(load.get("seed", 0)))
        mix = ImageMix([s.strip() for s in str(load.get("image_sizes", "640x480")).split(",")],
                       [f.strip() for f in str(load.get("formats", "jpeg")).split(",")],
                       float(load.get("duplicates", 0.0)), int(load.get("seed", 0)))
        state = asyncio.run(LoadRunner(spec, mix).run())
    figures = records_figures(state.records)
    return figures.throughput_rps, figures.percentile(50)


def run_verification(variants: list[Variant], rounds: int, duration_s: float, warmup_s: float,
                     say: Callable[[str], None] = lambda text: None) -> list[Outcome]:
    """Each round runs every variant once (order reversed every other round); gains are
    the ratio to the baseline of the same round, then the median over rounds."""
    ratios: dict[str, list[float]] = {v.label: [] for v in variants[1:]}
    for round_index in range(rounds):
        order = variants if round_index % 2 == 0 else list(reversed(variants))
        for n, variant in enumerate(order, 1):
            say(f"round {round_index + 1}/{rounds} · {n}/{len(order)} · {variant.label}")
            rps, p50 = measure(variant, duration_s, warmup_s)
            variant.rps.append(rps)
            variant.p50_ms.append(p50)
        base = variants[0].rps[-1]
        for variant in variants[1:]:
            ratios[variant.label].append(variant.rps[-1] / base if base else float("nan"))
    baseline_p50 = statistics.median(variants[0].p50_ms)
    outcomes = []
    for variant in variants[1:]:
        gain = variant.finding.estimated_gain if variant.finding else None
        outcomes.append(Outcome(variant.finding.rule if variant.finding else "?", variant.label,
                                gain.throughput_x if gain else None, statistics.median(ratios[variant.label]),
                                gain.p50_ms_after if gain else None, statistics.median(variant.p50_ms), baseline_p50))
    return outcomes
