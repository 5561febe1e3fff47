"""Real A100/V100 kineto traces from tests/data/kineto (Holistic Trace Analysis test data, MIT)."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter

import pytest

from probes import json_batches, kineto_typed
from probes.forked import ChildRefused, fork_available, usable_cores
from probes.kineto import KinetoError, KinetoTrace, _ingest_generic, ingest_kineto, read_trace_json
from probes.kineto_typed import share_count
from profiler.timeline import gpu_pid
from tests.data import KINETO_DATA

DATA = KINETO_DATA


def cats(events) -> Counter:
    return Counter(json.loads(a)["cat"] for a in events["args"])


def test_a100_training_step_figures() -> None:
    trace = ingest_kineto(DATA / "a100_train_rank0.json.gz")
    events = trace.events
    counts = cats(events)
    assert counts["kernel"] == 6080 and counts["gpu_memcpy"] == 1390 and counts["gpu_memset"] == 277
    assert counts["cpu_op"] == 25185 and counts["cuda_runtime"] == 33924
    copies = Counter((json.loads(a)["copy"], json.loads(a)["memory"])
                     for a in events["args"] if '"gpu_memcpy"' in a)
    assert copies == {("HtoD", "pageable"): 45, ("HtoD", "pinned"): 35, ("DtoH", "pageable"): 30,
                      ("DtoD", "device"): 1280}
    h2d = events[events["stage"] == "h2d"]
    assert len(h2d) == 80 and (h2d["pid"] == gpu_pid(0)).all()
    kernels = events[events["args"].str.contains('"cat":"kernel"')]
    busy_ms = kernels["dur_ns"].sum() / 1e6
    assert 100 < busy_ms < 10_000  # sum of kernel time in the step, ms
    assert trace.device_properties and "A100" in trace.device_properties[0]["name"]


def test_alexnet_pageable_copies_and_syncs() -> None:
    events = ingest_kineto(DATA / "alexnet_a100_pageable_sync.json.gz").events
    counts = cats(events)
    assert counts["gpu_memcpy"] == 16 and counts["cuda_sync"] == 41 and counts["kernel"] == 79
    memcpy = events[events["args"].str.contains('"gpu_memcpy"')]
    assert set(memcpy["name"]) == {"Memcpy HtoD (Pageable -> Device)"}
    assert all(json.loads(a)["memory"] == "pageable" for a in memcpy["args"])
    # absolute µs timestamps (no baseTimeNanoseconds): September 2023
    assert 1_695_000_000 * 10**9 < events["ts_ns"].min() < 1_696_000_000 * 10**9


def test_v100_fractional_microseconds_survive() -> None:
    events = ingest_kineto(DATA / "v100_ns_resolution.json.gz").events
    assert cats(events)["kernel"] == 4350
    assert (events["ts_ns"] % 1000 != 0).mean() > 0.5  # sub-µs parts kept, not truncated


def test_cpu_only_trace_uses_base_time() -> None:
    trace = ingest_kineto(DATA / "cpu_only.json.gz")
    assert trace.base_time_ns == 1719853884000000000
    assert len(trace.events) == 15 and (trace.events["pid"] > 0).all()
    assert trace.events["ts_ns"].min() > trace.base_time_ns


def test_broken_trace_is_one_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(KinetoError, match="bad.json.gz"):
        ingest_kineto(bad)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(KinetoError, match="no traceEvents"):
        ingest_kineto(other)


def assert_same_trace(fast: KinetoTrace, slow: KinetoTrace) -> None:
    for column in fast.events.columns.drop("args"):
        assert fast.events[column].equals(slow.events[column]), column
    assert [json.loads(a) for a in fast.events["args"]] == [json.loads(a) for a in slow.events["args"]]
    assert (fast.process_names, fast.thread_names) == (slow.process_names, slow.thread_names)
    assert (fast.base_time_ns, fast.device_properties) == (slow.base_time_ns, slow.device_properties)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["a100_train_rank0", "v100_ns_resolution", "alexnet_a100_pageable_sync"])
def test_typed_parse_matches_generic_parse(name: str) -> None:
    """The fast typed decode is taken on real traces and yields exactly what the generic JSON path does."""
    path = DATA / f"{name}.json.gz"
    fast = ingest_kineto(path)
    slow = _ingest_generic(read_trace_json(path))
    assert (fast.parser, slow.parser) == ("typed", "generic")
    assert_same_trace(fast, slow)


def _relaid(document: dict, layout: str) -> bytes:
    events = document["traceEvents"]
    if layout == "braces in values":  # what the batch cuts search for, inside a name and an arg
        events[3]["name"] = 'odd },{"ph": "X", name'
        next(e for e in events if e.get("cat") == "cuda_sync")["args"]["cuda_sync_kind"] = "},{"
    if layout == "events first":  # another array of objects follows the events
        document = {"traceEvents": events, "deviceProperties": document["deviceProperties"]}
    if layout == "compact":
        return json.dumps(document, separators=(",", ":")).encode()
    return json.dumps(document, indent=1).encode()


@pytest.mark.parametrize("layout, gzipped, parser", [
    ("compact", True, "typed"), ("indented", True, "typed"), ("indented", False, "typed"),
    ("braces in values", True, "typed"), ("events first", True, "generic")])
def test_batched_decode_is_exact_in_any_layout(layout: str, gzipped: bool, parser: str, tmp_path,
                                               monkeypatch) -> None:
    """The typed path decodes the events in batches cut where a text search finds the end of an
    event; however the JSON is laid out, the result is the generic path's (a layout it cannot cut
    goes the generic way)."""
    monkeypatch.setattr(json_batches, "GZIP_PIECE", 512)  # some hundred batches
    monkeypatch.setattr(json_batches, "TEXT_PIECE", 4096)
    document = json.loads(gzip.decompress((DATA / "alexnet_a100_pageable_sync.json.gz").read_bytes()))
    text = _relaid(document, layout)
    path = tmp_path / "trace.json"
    path.write_bytes(gzip.compress(text) if gzipped else text)
    fast = ingest_kineto(path)
    assert fast.parser == parser
    assert_same_trace(fast, _ingest_generic(read_trace_json(path)))


def test_metadata_anywhere_names_processes_and_threads(tmp_path, monkeypatch) -> None:
    """The typed path reads process and thread names wherever they stand, not only at the end."""
    monkeypatch.setattr(json_batches, "TEXT_PIECE", 4096)  # some hundred batches
    document = json.loads(gzip.decompress((DATA / "alexnet_a100_pageable_sync.json.gz").read_bytes()))
    events = document["traceEvents"]
    metadata = [e for e in events if e.get("ph") == "M"]
    rest = [e for e in events if e.get("ph") != "M"]
    document["traceEvents"] = metadata[:3] + rest[:500] + metadata[3:] + rest[500:]
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(document))
    fast = ingest_kineto(path)
    assert fast.parser == "typed" and fast.process_names and fast.thread_names
    assert_same_trace(fast, _ingest_generic(read_trace_json(path)))


@pytest.mark.parametrize("key", ["cat", "copy", "memory"])
def test_args_named_like_derived_fields_do_not_replace_them(key: str, tmp_path) -> None:
    """The args column's "cat", "copy" and "memory" come from the event, never from its own args."""
    document = json.loads(gzip.decompress((DATA / "alexnet_a100_pageable_sync.json.gz").read_bytes()))
    next(e for e in document["traceEvents"] if e.get("cat") == "gpu_memcpy")["args"][key] = "theirs"
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(document))
    trace = ingest_kineto(path)
    assert "theirs" not in "".join(trace.events["args"])
    assert_same_trace(trace, _ingest_generic(read_trace_json(path)))


def test_every_member_of_a_multi_member_gzip_is_read(tmp_path) -> None:
    text = gzip.decompress((DATA / "alexnet_a100_pageable_sync.json.gz").read_bytes())
    path = tmp_path / "members.json.gz"
    path.write_bytes(gzip.compress(text[:5000]) + gzip.compress(text[5000:]))
    assert_same_trace(ingest_kineto(path), ingest_kineto(DATA / "alexnet_a100_pageable_sync.json.gz"))


def test_odd_shaped_trace_takes_the_generic_path(tmp_path) -> None:
    """String timestamps (some exporters write them) do not fit the typed decode: same events via the fallback."""
    trace = {"traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 7, "tid": 8, "ts": "1000.5", "dur": 3,
         "args": {"External id": 4}},
        {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7, "ts": 1002, "dur": 2,
         "args": {"device": 0, "stream": 7, "correlation": 9}},
        {"ph": "M", "name": "thread_name", "pid": 7, "tid": 8, "args": {"name": "main"}},
    ], "baseTimeNanoseconds": 1_700_000_000_000_000_000}
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(trace))
    result = ingest_kineto(path)
    assert result.parser == "generic" and result.thread_names == {(7, 8): "main"}
    events = result.events
    assert list(events["ts_ns"] - 1_700_000_000_000_000_000) == [1_000_500, 1_002_000]
    assert list(events["pid"]) == [7, gpu_pid(0)] and list(events["tid"]) == [8, 7]
    assert json.loads(events["args"].iloc[1]) == {"cat": "kernel", "device": 0, "stream": 7, "correlation": 9}


class CountingForked(kineto_typed.Forked):
    """The real Forked, counting the children it starts and the refusals it reports."""
    started: list[int] = []
    refused: list[int] = []

    def __init__(self, work, ranks, refusals=()) -> None:
        ranks = list(ranks)
        CountingForked.started.extend(ranks)
        super().__init__(work, ranks, refusals)

    def result(self, rank: int, timeout_s: float) -> bytes:
        try:
            return super().result(rank, timeout_s)
        except ChildRefused:
            CountingForked.refused.append(rank)
            raise


@pytest.fixture
def counted_forks(monkeypatch):
    CountingForked.started, CountingForked.refused = [], []
    monkeypatch.setattr(kineto_typed, "Forked", CountingForked)
    return CountingForked


def _small_batches(monkeypatch) -> None:
    monkeypatch.setattr(json_batches, "GZIP_PIECE", 512)
    monkeypatch.setattr(json_batches, "TEXT_PIECE", 4096)


@pytest.mark.parametrize("name, workers", [("alexnet_a100_pageable_sync", "2"), ("alexnet_a100_pageable_sync", "3"),
                                           ("a100_train_rank0", "2")])
@pytest.mark.slow
def test_batches_shared_among_forked_processes_give_the_generic_result(name, workers, monkeypatch,
                                                                       counted_forks) -> None:
    monkeypatch.setenv("PROF_INGEST_WORKERS", workers)
    if name.startswith("alexnet"):
        _small_batches(monkeypatch)
    path = DATA / f"{name}.json.gz"
    fast = ingest_kineto(path)
    assert fast.parser == "typed" and counted_forks.started == list(range(1, int(workers)))
    assert_same_trace(fast, _ingest_generic(read_trace_json(path)))


def test_a_big_trace_is_shared_among_the_cores_and_a_small_one_is_not(monkeypatch) -> None:
    monkeypatch.delenv("PROF_INGEST_WORKERS", raising=False)
    big = (DATA / "a100_train_rank0.json.gz").read_bytes()  # 25.7 MB of JSON text
    assert share_count(big) == (min(usable_cores(), 3) if fork_available() else 1)
    assert share_count((DATA / "alexnet_a100_pageable_sync.json.gz").read_bytes()) == 1
    monkeypatch.setenv("PROF_INGEST_WORKERS", "many")
    with pytest.raises(KinetoError, match="PROF_INGEST_WORKERS='many'"):
        ingest_kineto(DATA / "alexnet_a100_pageable_sync.json.gz")


def _crash_in_child(raw: bytes, workers: int, rank: int) -> bytes:
    os._exit(1)


def test_the_share_of_a_crashed_process_is_decoded_by_the_parent(monkeypatch, counted_forks) -> None:
    monkeypatch.setenv("PROF_INGEST_WORKERS", "3")
    _small_batches(monkeypatch)
    monkeypatch.setattr(kineto_typed, "_child_share", _crash_in_child)  # what the forked children run
    path = DATA / "alexnet_a100_pageable_sync.json.gz"
    fast = ingest_kineto(path)
    assert fast.parser == "typed" and counted_forks.started == [1, 2]
    assert_same_trace(fast, _ingest_generic(read_trace_json(path)))


def test_a_share_that_does_not_fit_sends_the_whole_trace_the_generic_way(tmp_path, monkeypatch,
                                                                        counted_forks) -> None:
    """A string timestamp in a batch the second process decodes: it refuses, and the trace is read
    by the generic path (which takes string timestamps) with nothing lost."""
    _small_batches(monkeypatch)
    document = json.loads(gzip.decompress((DATA / "alexnet_a100_pageable_sync.json.gz").read_bytes()))
    text = json.dumps(document, separators=(",", ":")).encode()
    batches: dict[float, int] = {}
    record = kineto_typed._Columns.add
    monkeypatch.setattr(kineto_typed._Columns, "add", lambda self, index, events: (
        batches.update((e.ts, index) for e in events if type(e).__name__ == "_Complete"), record(self, index, events)))
    kineto_typed.decode_typed(text)
    monkeypatch.setattr(kineto_typed._Columns, "add", record)
    written = {float(e["ts"]): json.dumps(e["ts"]).encode() for e in document["traceEvents"] if e.get("ph") == "X"}
    number = next(written[ts] for ts, index in batches.items()
                  if index % 2 == 1 and text.count(b'"ts":' + written[ts] + b",") == 1)
    odd = text.replace(b'"ts":' + number + b",", b'"ts":"' + number[:-2] + b'",')  # same length: same batches
    path = tmp_path / "odd.json"
    path.write_bytes(odd)
    monkeypatch.setenv("PROF_INGEST_WORKERS", "2")
    result = ingest_kineto(path)
    assert counted_forks.refused == [1] and result.parser == "generic"
    assert len(result.events) == len(ingest_kineto(DATA / "alexnet_a100_pageable_sync.json.gz").events)
