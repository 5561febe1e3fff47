from __future__ import annotations

import json

import pytest

from probes.kineto import ingest_kineto
from profiler.renderers.chrome import render_chrome_trace
from profiler.renderers.speedscope import render_speedscope
from profiler.timeline import StackTable, make_events, merge_events
from tests.chrome_trace_validator import validate_chrome_trace
from tests.data import KINETO_DATA

DATA = KINETO_DATA
T0 = 1_700_000_000_000_000_000


def small_session() -> tuple:
    stacks = StackTable()
    handle = [("main", "srv.py", 1), ("handle", "srv.py", 20)]
    decode_stack = stacks.intern(handle + [("decode", "img.py", 5)])
    infer_stack = stacks.intern(handle + [("run", "ort.py", 9)])
    stages = make_events(
        ts_ns=[T0, T0 + 1_000, T0 + 3_000, T0 + 3_500, T0 + 5_000, T0 + 5_500, T0 + 3_600],
        source="stages", kind="span",
        name=["receive", "decode", "queue", "queue", "h2d", "inference", "preprocess"],
        stage=["receive", "decode", "queue", "queue", "h2d", "inference", "preprocess"],
        dur_ns=[900, 1_900, 2_000, 1_500, 400, 3_000, 1_000], pid=10, tid=[11, 12, 11, 13, 14, 14, 12],
        request_id=["a", "a", "a", "b", None, None, "b"], batch_id=[-1, -1, 7, 7, 7, 7, -1])
    samples = make_events(ts_ns=[T0 + 1_000, T0 + 2_000, T0 + 5_500], source="pyspy", kind="sample",
                          name=["decode", "decode", "run"], dur_ns=[1_000, 900, 3_000], pid=10, tid=[12, 12, 14],
                          stack_id=[decode_stack, decode_stack, infer_stack], value=[1, 1, 3])
    counters = make_events(ts_ns=[T0, T0 + 4_000], source="proc", kind="counter", name="cpu_percent", pid=10,
                           value=[50.0, 75.0])
    return merge_events([stages, samples, counters]), stacks


def test_chrome_trace_of_a_session_is_well_formed_with_flows_and_stacks() -> None:
    events, stacks = small_session()
    trace = json.loads(render_chrome_trace(events, stacks, {10: "sample server"}))
    assert validate_chrome_trace(trace) == []
    out = trace["traceEvents"]
    assert min(e["ts"] for e in out if "ts" in e) == 0.0  # rebased to the first event
    flows = [e for e in out if e["ph"] in ("s", "f")]
    assert len(flows) == 4  # requests a and b each flow into batch 7
    decode_frames = [e for e in out if e.get("cat") == "pyspy" and e["name"] == "decode"]
    assert len(decode_frames) == 1 and decode_frames[0]["dur"] == pytest.approx(1.9)  # merged stretch
    assert any(e["ph"] == "C" and e["args"]["value"] == 75.0 for e in out)
    names = {e["args"]["name"] for e in out if e["ph"] == "M" and e["name"] == "process_name"}
    assert "sample server" in names
    x = next(e for e in out if e["ph"] == "X" and e["name"] == "decode" and e["cat"] == "stages")
    assert x["args"]["request_id"] == "a" and x["ts"] == pytest.approx(1.0)


def test_validator_catches_broken_nesting_and_missing_metadata() -> None:
    bad = {"traceEvents": [
        {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "p"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "t"}},
        {"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
        {"ph": "X", "name": "b", "pid": 1, "tid": 1, "ts": 5, "dur": 10},
        {"ph": "X", "name": "c", "pid": 2, "tid": 1, "ts": 0, "dur": 1},
        {"ph": "s", "name": "f", "pid": 1, "tid": 1, "ts": 0, "id": 9},
    ]}
    problems = validate_chrome_trace(bad)
    assert any("without nesting" in p for p in problems)
    assert any("pid 2 has no process_name" in p for p in problems)
    assert any("flow 9" in p for p in problems)


def test_real_gpu_trace_exports_to_a_valid_chrome_trace() -> None:
    trace_in = ingest_kineto(DATA / "alexnet_a100_pageable_sync.json.gz")
    trace = json.loads(render_chrome_trace(trace_in.events))
    assert validate_chrome_trace(trace) == []
    kernels = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["args"].get("cat") == "kernel"]
    assert len(kernels) == 79
    launches = [e for e in trace["traceEvents"] if e["ph"] == "f" and e["name"] == "launch"]
    assert len(launches) == 79 + 16 + 3  # every kernel, copy and memset joined to its CUDA launch


def test_speedscope_export_has_one_profile_per_thread_with_weights() -> None:
    events, stacks = small_session()
    document = json.loads(render_speedscope(events, stacks))
    assert document["$schema"].startswith("https://www.speedscope.app")
    profiles = {p["name"]: p for p in document["profiles"]}
    assert set(profiles) == {"pid 10 tid 12", "pid 10 tid 14"}
    decode = profiles["pid 10 tid 12"]
    assert decode["weights"] == [1_000, 900] and decode["endValue"] == 1_900
    frames = document["shared"]["frames"]
    assert [frames[i]["name"] for i in decode["samples"][0]] == ["main", "handle", "decode"]


def test_names_and_ids_that_need_escaping_survive_export() -> None:
    odd = 'say "hi" \\ \t now'
    events = make_events(ts_ns=[T0, T0 + 10], source="stages", kind="span", name=[odd, "plain"], dur_ns=[5, 5],
                         pid=1, tid=1, request_id=[odd, "r-2"], args=['{"k":"v"}', None])
    trace = json.loads(render_chrome_trace(events))
    assert validate_chrome_trace(trace) == []
    spans = {e["name"]: e for e in trace["traceEvents"] if e["ph"] == "X"}
    assert spans[odd]["args"] == {"k": "v", "request_id": odd}
    assert spans["plain"]["args"] == {"request_id": "r-2"}


def test_chunked_chrome_export_equals_one_chunk(monkeypatch) -> None:
    """Big exports are rendered in chunks on two threads and written in order: same bytes as one chunk."""
    from profiler.renderers import chrome

    events = ingest_kineto(DATA / "alexnet_a100_pageable_sync.json.gz").events
    whole = render_chrome_trace(events)
    monkeypatch.setattr(chrome, "_CHUNK_ROWS", 7)
    chunked = render_chrome_trace(events)
    assert chunked == whole
    assert len(json.loads(chunked)["traceEvents"]) > len(events)
