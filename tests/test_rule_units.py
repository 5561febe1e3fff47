"""Every rule of the registry on evidence laid out in code (tests/rule_factories.py): one timeline
that must fire it and one, alike but for the evidence the rule judges, that must not. No server
is started. The registry's ids and these cases are checked to match, so a new rule comes with
both tests."""

from __future__ import annotations

from typing import Callable

import pytest

from profiler.analysis.context import AnalysisContext
from profiler.rules import RULE_IDS, RULES
from profiler.rules.contract import Verdict, ranked, to_finding
from profiler.timeline import StackTable
from tests import rule_factories as f

WORK = {"receive": 1, "decode": 2, "preprocess": 2, "inference": 10, "serialize": 1}


def _decode(decode_ms: float) -> AnalysisContext:
    return f.context(f.requests(20, {**WORK, "decode": decode_ms}))


def _preprocess(preprocess_ms: float) -> AnalysisContext:
    return f.context(f.requests(20, {**WORK, "preprocess": preprocess_ms}))


def _batching(overlap: int) -> AnalysisContext:
    return f.context(f.requests(40, WORK, overlap=overlap))


def _precision_cpu(op: str) -> AnalysisContext:
    return f.context(f.requests(20, WORK), f.ort_nodes([(op, 5.0), ("Gemm", 1.0)]), calibrated=f.calibration())


def _precision_gpu(kernel: str) -> AnalysisContext:
    return f.context(f.kineto([("kernel", kernel, i * 2.0, 1.5, {}) for i in range(20)], device=0))


def _fusion(ops: list[tuple[str, float]]) -> AnalysisContext:
    return f.context(f.requests(20, WORK), f.ort_nodes(ops), calibrated=f.calibration())


def _runtime(torch_ms: float) -> AnalysisContext:
    stacks = StackTable()
    events = f.samples(stacks, [(f.TORCH_FORWARD, 700, 1), (f.ENCODE, 300, 1)])
    return f.context(events, stacks=stacks, calibrated=f.calibration(runtime_ms={"ort": 20.0, "torch-eager": torch_ms}))


def _cache(repeat_every: int) -> AnalysisContext:
    bodies = [f"body{i % repeat_every}" if repeat_every else f"body{i}" for i in range(40)]
    return f.context(f.wire(bodies), f.requests(40, WORK))


def _pageable(memory: str) -> AnalysisContext:
    copies = [("gpu_memcpy", f"Memcpy HtoD ({memory.title()} -> Device)", i * 5.0, 2.0,
               {"copy": "HtoD", "memory": memory, "bytes": 4_000_000}) for i in range(8)]
    kernels = [("kernel", "volta_h884gemm", i * 5.0 + 2.5, 2.0, {}) for i in range(8)]
    return f.context(f.kineto(copies + kernels, device=0))


def _syncs(count: int) -> AnalysisContext:
    spans = [("cuda_sync", "Stream Sync", i * 10.0, 3.0, {"cuda_sync_kind": "Stream Sync"}) for i in range(count)]
    spans += [("cpu_op", "aten::mm", i * 10.0 + 4, 5.0, {}) for i in range(5)]
    return f.context(f.kineto(spans))


def _device_idle(gap_ms: float) -> AnalysisContext:
    return f.context(f.kineto([("kernel", "volta_h884gemm", i * (2.0 + gap_ms), 2.0, {}) for i in range(20)], device=0))


def _gil(holds: bool) -> AnalysisContext:
    stacks = StackTable()
    busy = f.samples(stacks, [(f.PY_WORK, 5000, 1), (f.PY_WORK, 5000, 2)])
    # holding: one thread runs, two wait mid-work; not: the threads run at once (GIL released)
    states = [("holds-gil", f.PY_WORK), ("inactive", f.PY_WORK), ("inactive", f.PY_WORK)] if holds else \
        [("active", f.PY_WORK), ("active", f.PY_WORK), ("inactive", f.IDLE)]
    return f.context(busy, f.snapshots(stacks, states, 10), f.counters("cpu_percent", {-1: 100.0 if holds else 190.0}),
                     stacks=stacks)


def _queue(serial: bool) -> AnalysisContext:
    """Two handler threads, 2 s: the model taking turns behind a lock (one runs while the other
    waits in Condition.wait), or both running it at once; four requests in flight throughout."""
    stacks = StackTable()
    wait = [*f.HANDLER, ("Condition.wait", "/usr/lib/python3.11/threading.py", 320)]
    turns = [(f.TORCH_FORWARD, 1000, 1), (wait, 1000, 1), (wait, 1000, 2), (f.TORCH_FORWARD, 1000, 2)] if serial \
        else [(f.TORCH_FORWARD, 2000, 1), (f.TORCH_FORWARD, 2000, 2)]
    return f.context(f.samples(stacks, turns), f.wire([str(i) for i in range(80)], 100.0, concurrency=4),
                     f.counters("cpu_percent", {-1: 100.0}), stacks=stacks)


def _request_path(frames: list | None) -> AnalysisContext:
    """Four handler threads, 2 s, four requests in flight: half of each thread's time in
    ``frames`` (a downstream call, logging), half in the model; or all of it in the model."""
    stacks = StackTable()
    turns = [(f.TORCH_FORWARD, 2000, t) for t in range(1, 5)] if frames is None else \
        [item for t in range(1, 5) for item in ((frames, 1000, t), (f.TORCH_FORWARD, 1000, t))]
    return f.context(f.samples(stacks, turns), f.wire([str(i) for i in range(80)], 100.0, concurrency=4),
                     f.counters("cpu_percent", {-1: 100.0}), stacks=stacks)


DOWNSTREAM_CALL = [*f.HANDLER, ("HTTPConnection.getresponse", "/usr/lib/python3.11/http/client.py", 1390),
                   ("HTTPResponse.begin", "/usr/lib/python3.11/http/client.py", 325),
                   ("SocketIO.readinto", "/usr/lib/python3.11/socket.py", 706)]
LOGGING_CALL = [*f.HANDLER, ("Logger.info", "/usr/lib/python3.11/logging/__init__.py", 1489),
                ("Formatter.format", "/usr/lib/python3.11/logging/__init__.py", 680)]


def _gc(collecting: bool) -> AnalysisContext:
    """The garbage-collector watch over 5 s at 4 Hz (20 native samples): a handler thread inside
    the collector for four stretches of 250 ms (a fifth of the time), or never."""
    from profiler.timeline import make_events

    stacks = StackTable()
    in_gc = stacks.intern([*f.PY_WORK, ("<gc>", "<native>", 0)])
    watch = make_events(ts_ns=[f.T0], dur_ns=[5000 * f.MS], source="pyspy", kind="span", name="native-watch",
                        pid=f.PID, tid=-1, value=20.0)
    gc = make_events(ts_ns=[f.T0 + n * 1250 * f.MS for n in range(4)], dur_ns=250 * f.MS, source="pyspy",
                     kind="span", name="<gc>", pid=f.PID, tid=1, stack_id=in_gc, value=1.0)
    return f.context(f.samples(stacks, [(f.PY_WORK, 5000, 1)]), watch, *([gc] if collecting else []), stacks=stacks)


def _threads(wait_percent: float) -> AnalysisContext:
    tids = {t: 60.0 for t in range(1, 5)}
    return f.context(f.counters("thread_cpu_percent", tids),
                     f.counters("thread_wait_percent", {t: wait_percent for t in tids}))


def _serialization(encode_ms: float) -> AnalysisContext:
    return f.context(f.requests(20, {**WORK, "deserialize": encode_ms, "serialize": encode_ms}))


def _reload(during_serving: bool) -> AnalysisContext:
    loads = [(40.0 + 16 * i, 4.0) for i in range(5)] if during_serving else [(-500.0, 300.0)]
    return f.context(f.requests(20, WORK, gap_ms=20.0, loads_ms=loads))


def _fallback(cpu_nodes: bool) -> AnalysisContext:
    gpu = f.ort_nodes([("Conv", 2.0), ("Relu", 0.5)], provider="CUDAExecutionProvider")
    cpu = f.ort_nodes([("NonMaxSuppression", 1.0)], provider="CPUExecutionProvider") if cpu_nodes else gpu.iloc[:0]
    return f.context(f.requests(20, WORK), gpu, cpu)


def _outliers(slow_ms: float) -> AnalysisContext:
    latencies = [10.0] * 97 + [slow_ms] * 3
    return f.context(f.client(latencies))


CASES: dict[str, tuple[Callable[[], AnalysisContext], Callable[[], AnalysisContext]]] = {
    "decode-bound": (lambda: _decode(8.0), lambda: _decode(1.0)),
    "preprocess-bound": (lambda: _preprocess(8.0), lambda: _preprocess(1.0)),
    "batching-opportunity": (lambda: _batching(4), lambda: _batching(1)),
    "reduced-precision": (lambda: _precision_cpu("Conv"), lambda: _precision_cpu("QLinearConv")),
    "graph-fusion": (lambda: _fusion([("Conv", 3.0), ("BatchNormalization", 1.0), ("Relu", 0.5)]),
                     lambda: _fusion([("FusedConv", 3.5)])),
    "runtime-switch": (lambda: _runtime(32.0), lambda: _runtime(21.0)),
    "cache-opportunity": (lambda: _cache(4), lambda: _cache(0)),
    "pageable-h2d": (lambda: _pageable("pageable"), lambda: _pageable("pinned")),
    "host-sync": (lambda: _syncs(6), lambda: _syncs(1)),
    "device-idle": (lambda: _device_idle(3.0), lambda: _device_idle(0.1)),
    "gil-contention": (lambda: _gil(True), lambda: _gil(False)),
    "implicit-queue": (lambda: _queue(True), lambda: _queue(False)),
    "gc-pauses": (lambda: _gc(True), lambda: _gc(False)),
    "downstream-wait": (lambda: _request_path(DOWNSTREAM_CALL), lambda: _request_path(None)),
    "blocking-io": (lambda: _request_path(LOGGING_CALL), lambda: _request_path(None)),
    "thread-oversubscription": (lambda: _threads(45.0), lambda: _threads(5.0)),
    "serialization-overhead": (lambda: _serialization(5.0), lambda: _serialization(0.2)),
    "model-reload": (lambda: _reload(True), lambda: _reload(False)),
    "cpu-fallback": (lambda: _fallback(True), lambda: _fallback(False)),
    "latency-outliers": (lambda: _outliers(80.0), lambda: _outliers(12.0)),
}
RULE_OF = {rule.id: rule for rule in RULES}


def test_every_registered_rule_has_a_fire_and_a_no_fire_case() -> None:
    assert set(CASES) == set(RULE_IDS) and len(RULE_IDS) == len(set(RULE_IDS)) == len(RULES)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires_on_its_evidence(rule_id: str) -> None:
    ctx = CASES[rule_id][0]()
    verdicts = RULE_OF[rule_id].check(ctx)
    assert len(verdicts) == 1, verdicts
    verdict = verdicts[0]
    assert isinstance(verdict, Verdict) and 0.0 < verdict.removed <= 1.0 and verdict.evidence and verdict.title
    finding = to_finding(ctx, rule_id, verdict)
    assert finding.rule == rule_id and 0.0 < finding.share <= 1.0
    assert (finding.estimated_gain is None) == (verdict.gain_method is None)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_is_silent_without_its_evidence(rule_id: str) -> None:
    assert RULE_OF[rule_id].check(CASES[rule_id][1]()) == []


def test_reduced_precision_judges_gpu_kernels_by_their_precision() -> None:
    rule = RULE_OF["reduced-precision"].check
    (verdict,) = rule(_precision_gpu("volta_sgemm_128x64_nn"))
    assert verdict.evidence["fp32_kernel_fraction"] == pytest.approx(1.0)
    assert rule(_precision_gpu("volta_h884gemm_64x64_nn")) == []


def test_removed_is_a_fraction_of_busy_time_and_the_driver_scales_it_to_request_time() -> None:
    # 20 requests one after another, 16 ms of work each: busy time is all of request time when
    # stage spans are the only requests; decode is 8 / 22 of it.
    ctx = _decode(8.0)
    (verdict,) = RULE_OF["decode-bound"].check(ctx)
    assert verdict.removed == pytest.approx(8 / 22 * 0.5)  # no host timings: the assumed saving
    finding = to_finding(ctx, "decode-bound", verdict)
    assert finding.share == pytest.approx(ctx.e2e_share(verdict.removed), abs=1e-4)
    assert finding.estimated_gain.throughput_x == pytest.approx(1 / (1 - verdict.removed), abs=1e-3)
    assert finding.severity == "high"


def test_a_fraction_of_request_time_converts_to_busy_time_and_back() -> None:
    ctx = f.context(f.client([30.0] * 60, concurrency=1), f.requests(60, {"inference": 10.0}, gap_ms=30.0))
    assert ctx.requests.source == "loadgen" and not ctx.saturated
    busy = ctx.busy_fraction(0.2)
    assert busy == pytest.approx(0.6)  # request time is 3x the work
    assert ctx.e2e_share(busy) == pytest.approx(0.2)


def test_ranking_puts_a_declared_cause_just_before_its_consequence() -> None:
    gil = _gil(True)
    (verdict,) = RULE_OF["gil-contention"].check(gil)
    assert verdict.ranks_after == ()  # py-spy's work frames here are no cause of their own
    from profiler.analysis.model import Finding, Fix

    def made(rule: str, share: float, after: tuple[str, ...] = ()) -> Finding:
        return Finding(rule, rule, share, {}, Fix("-"), ranks_after=list(after))

    findings = [made("gil-contention", 0.5, ("decode-bound",)), made("cache-opportunity", 0.4),
                made("decode-bound", 0.1)]
    assert [x.rule for x in ranked(findings)] == ["decode-bound", "gil-contention", "cache-opportunity"]


def test_the_readme_documents_exactly_the_registered_rules() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("| rule id |"):].split("\n\n", 1)[0]  # the rule table, to its blank line
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.M)
    assert sorted(documented) == sorted(RULE_IDS)


def test_a_wait_on_the_request_path_is_a_share_of_request_time_and_its_gain_a_latency_model() -> None:
    """Half of every request waits on a downstream call, one core of two in use: the finding
    explains half of request time, and removing 80 % of the wait gives 1 / (1 - 0.4), inside the
    CPU's bound (2 free cores / 1 used)."""
    from profiler.rules.contract import to_finding
    from profiler.rules.request_path import downstream_wait

    ctx = _request_path(DOWNSTREAM_CALL)
    (verdict,) = downstream_wait(ctx)
    assert verdict.of_latency and verdict.evidence["request_time_share"] == pytest.approx(0.5, abs=0.02)
    assert verdict.evidence["waiting_part"] == pytest.approx(1.0)
    finding = to_finding(ctx, "downstream-wait", verdict)
    assert finding.share == pytest.approx(verdict.removed)
    assert finding.estimated_gain.throughput_x == pytest.approx(1 / (1 - 0.8 * 0.5), abs=0.03)


ORT_RUN = [*f.HANDLER, ("InferenceSession.run",
                        "/venv/site-packages/onnxruntime/capi/onnxruntime_inference_collection.py", 220)]


@pytest.mark.parametrize("inference_ms, fires", [(28.0, True), (12.0, False)])
def test_graph_fusion_without_a_trace_is_told_by_the_servers_own_model_timed_here(inference_ms, fires) -> None:
    """80 requests; inference per request against this model's calibrated optimized (10 ms) and
    unoptimized (30 ms) times: near the unoptimized one it fires, near the optimized one not —
    and never on the sample model's calibration."""
    from profiler.rules import graph_fusion

    def made(model: str) -> AnalysisContext:
        stacks = StackTable()
        per_thread = 80 * inference_ms / 2
        calibration = f.calibration(fp32_ms=10.0, ort_opt_speedup=3.0)
        calibration.model = model
        return f.context(f.samples(stacks, [(ORT_RUN, per_thread, 1), (ORT_RUN, per_thread, 2)]),
                         f.wire([str(i) for i in range(80)], 50.0, concurrency=2), stacks=stacks,
                         calibrated=calibration)

    verdicts = graph_fusion.check(made("/srv/models/net.onnx"))
    assert bool(verdicts) == fires
    if fires:
        assert verdicts[0].evidence["calibrated_unoptimized_ms"] == pytest.approx(30.0)
        assert verdicts[0].gain_method == "calibrated"
    from profiler.analysis.calibration_model import SAMPLE_MODEL

    assert graph_fusion.check(made(SAMPLE_MODEL)) == []


def test_serialization_holding_the_gil_counts_by_its_share_of_the_held_time() -> None:
    """Encoding answers is a sixth of the busy samples (under the 20 % mark) but holds the GIL
    in most snapshots of a GIL-bound server: the mark and the gain go by the GIL-held time."""
    from profiler.rules.serialization import check

    stacks = StackTable()
    busy = f.samples(stacks, [(f.PY_WORK, 5000, 1), (f.ENCODE, 1000, 2)])
    held = [("holds-gil", f.ENCODE), ("inactive", f.PY_WORK)]
    ctx = f.context(busy, f.snapshots(stacks, held, 10), f.counters("cpu_percent", {-1: 100.0}), stacks=stacks)
    assert ctx.service_share("serialize") < 0.2 and ctx.gil.held_share >= ctx.GIL_BOUND
    (verdict,) = check(ctx)
    assert "GIL-held time" in verdict.title
    assert verdict.removed == pytest.approx(ctx.gil_removed("serialize") * 0.8, abs=0.02)  # no wire: 80 % assumed
    released = f.context(busy, f.snapshots(stacks, [("active", f.ENCODE), ("active", f.PY_WORK)], 10),
                         f.counters("cpu_percent", {-1: 190.0}), stacks=stacks)
    assert check(released) == []  # the GIL is no bottleneck: a sixth of the work stays under the mark


def test_the_collector_is_the_gil_holder_the_snapshots_cannot_name() -> None:
    """GIL-bound threads (one holds it in every snapshot) and the gc watch finding the
    collector running 60 % of the time (over half the held share): gil-contention ranks after
    gc-pauses; at 20 % (under half) it names no cause."""
    from profiler.timeline import make_events

    def with_collector(in_gc_ms: float) -> AnalysisContext:
        gil = _gil(True)
        watch = make_events(ts_ns=[f.T0, f.T0], dur_ns=[5000 * f.MS, int(in_gc_ms * f.MS)], source="pyspy",
                            kind="span", name=["native-watch", "<gc>"], pid=f.PID, tid=[-1, 1], value=[20.0, 1.0])
        return f.context(gil.timeline, watch, stacks=gil.stacks)

    ctx = with_collector(3000)
    assert ctx.gil.held_share == pytest.approx(1.0) and ctx.gc[1] == pytest.approx(0.6)
    (verdict,) = RULE_OF["gil-contention"].check(ctx)
    assert verdict.ranks_after == ("gc-pauses",) and verdict.evidence["in_gc_share"] == pytest.approx(0.6)
    (verdict,) = RULE_OF["gil-contention"].check(with_collector(1000))
    assert verdict.ranks_after == ()


def test_preprocessing_as_fast_as_the_reference_for_its_image_size_is_no_finding() -> None:
    """The wire says the requests carried 640x480 JPEGs; resize + crop + normalise of that size
    is timed on this host. Preprocessing a fifth of the work at the reference's speed leaves
    nothing to gain; ten times the reference is a finding whose saving is what exceeds it."""
    import dataclasses

    from profiler.analysis.factors import preprocess_reference_ms
    from profiler.rules.stage_bound import preprocess_bound

    reference = preprocess_reference_ms(640, 480)

    def served(preprocess_ms: float) -> AnalysisContext:
        work = {"inference": preprocess_ms * 3.0, "preprocess": preprocess_ms}
        ctx = f.context(f.requests(20, work), f.wire([str(i) for i in range(20)], sum(work.values()),
                                                     image=("jpeg", 640, 480)))
        return dataclasses.replace(ctx, host_timings=True)

    fast = served(reference * 1.1)
    assert fast.images.width == 640 and fast.service_share("preprocess") == pytest.approx(0.25, abs=0.01)
    assert preprocess_bound(fast) == []
    (verdict,) = preprocess_bound(served(reference * 10))
    saving = 1 - preprocess_reference_ms(640, 480) / (reference * 10)
    assert verdict.evidence["image"] == "640x480"
    assert verdict.removed == pytest.approx(0.25 * saving, abs=0.03)
