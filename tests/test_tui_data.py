"""The figures the viewer draws, checked against brute force: lane coverage per column at any
zoom, self time of nested spans, py-spy totals that count a recursive function once, call-tree
counts under stage and window filters, request waterfalls and batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from profiler.timeline import StackTable, make_events, merge_events
from tests.tui_session import REQUESTS, make_tui_session
from tui.calltree import CallTree, TreeFilter
from tui.lanes import build_lanes
from profiler.measures import Measures
from tui.prepare import request_index


def hotspot_table(events: pd.DataFrame, stacks: StackTable | None) -> pd.DataFrame:
    """The measures layer's hotspots of these events, as rows (what the viewer shows)."""
    rows = Measures(events, stacks or StackTable(), {}).hotspots
    return pd.DataFrame([vars(h) for h in rows if h.kind != "stage"])


def _brute_coverage(starts, ends, codes, n_names, edges):
    out = np.zeros((n_names, len(edges) - 1))
    for s, e, c in zip(starts, ends, codes):
        for col in range(len(edges) - 1):
            out[c, col] += max(0, min(e, edges[col + 1]) - max(s, edges[col]))
    return out


@pytest.mark.parametrize("width", [7, 64, 301])
def test_lane_columns_match_brute_force_coverage_at_any_zoom(width: int) -> None:
    rng = np.random.default_rng(width)
    n = 400
    ts = np.sort(rng.integers(0, 10_000_000, n))
    dur = rng.integers(1, 400_000, n)
    names = rng.choice(["decode", "inference", "queue"], n)
    events = make_events(ts_ns=1_000 + ts, dur_ns=dur, source="stages", kind="span", name=names, pid=1, tid=1)
    lane = build_lanes(events)[0]
    for t0, t1 in ((1_000, 1_000 + 10_400_000), (2_000_000, 2_050_000)):
        codes, busy = lane.columns(t0, t1, width)
        edges = np.linspace(t0 - lane.origin, t1 - lane.origin, width + 1).astype(np.int64)
        brute = _brute_coverage(lane.starts, lane.ends, lane.codes, len(lane.names), edges)
        covered = brute.max(axis=0) > 0
        assert np.array_equal(codes >= 0, covered)
        assert np.all(brute[codes[covered], np.nonzero(covered)[0]] == brute.max(axis=0)[covered])
        assert np.allclose(busy, brute.sum(axis=0) / np.maximum(np.diff(edges), 1))


def test_lane_says_what_runs_at_an_instant_and_counters_hold_their_last_reading() -> None:
    spans = make_events(ts_ns=[100, 150, 400], dur_ns=[200, 20, 50], source="ort", kind="span",
                        name=["model_run", "conv", "relu"], pid=1, tid=2)
    counter = make_events(ts_ns=[100, 300], source="proc", kind="counter", name="cpu_percent", pid=1, value=[10., 90.])
    span_lane, counter_lane = build_lanes(merge_events([spans, counter]))
    assert [(n, d) for n, _, d in span_lane.at(160)] == [("model_run", 200), ("conv", 20)]
    assert span_lane.at(350) == []
    assert counter_lane.value_at(299) == 10.0 and counter_lane.value_at(300) == 90.0
    means = counter_lane.counter_columns(100, 500, 4)
    assert means[0] == 10.0 and means[1] == 10.0 and means[2] == 90.0 and means[3] == 90.0


def test_lanes_are_labelled_with_thread_names_where_known() -> None:
    spans = make_events(ts_ns=[100, 200], dur_ns=[50, 50], source="ort", kind="span", name="conv", pid=1, tid=[2, 3])
    counter = make_events(ts_ns=[100], source="proc", kind="counter", name="thread_cpu_percent", pid=1, tid=2,
                          value=[50.0])
    lanes = build_lanes(merge_events([spans, counter]), thread_names={2: "inference_0"})
    assert [lane.label for lane in lanes] == ["ort inference_0", "ort t3", "inference_0 cpu_percent"]


def test_self_time_of_nested_spans_leaves_out_direct_children_only() -> None:
    # run [0,100) holds a [10,60) which holds b [20,30); c [70,90) is a sibling of a
    events = make_events(ts_ns=[0, 10, 20, 70, 500], dur_ns=[100, 50, 10, 20, 10], source="torch", kind="span",
                         name=["run", "a", "b", "c", "run"], pid=1, tid=1, args='{"cat":"cpu_op"}')
    table = hotspot_table(events, None).set_index("name")
    assert table.loc["run", "self_ms"] * 1e6 == pytest.approx(100 - 50 - 20 + 10)
    assert table.loc["a", "self_ms"] * 1e6 == pytest.approx(40)
    assert table.loc["b", "self_ms"] * 1e6 == pytest.approx(10)
    assert table.loc["run", "count"] == 2 and table.loc["run", "total_ms"] * 1e6 == pytest.approx(110)


def test_sampled_function_totals_count_recursion_once_per_sample() -> None:
    stacks = StackTable()
    deep = stacks.intern([("main", "app.py", 1), ("walk", "app.py", 5), ("walk", "app.py", 5), ("leaf", "app.py", 9)])
    shallow = stacks.intern([("main", "app.py", 1), ("walk", "app.py", 5)])
    events = make_events(ts_ns=np.arange(4) * 10_000_000, source="pyspy", kind="sample", name="s", pid=1, tid=1,
                         dur_ns=10_000_000, stack_id=[deep, deep, shallow, deep], value=1.0)
    table = hotspot_table(events, stacks).set_index("name")
    walk = table.loc["walk (app.py)"]
    assert walk["count"] == 4 and walk["total_ms"] == pytest.approx(40.0)  # 4 samples of 10 ms, not 7
    assert walk["total_share"] == pytest.approx(1.0)
    assert walk["self_ms"] == pytest.approx(10.0) and table.loc["leaf (app.py)", "share"] == pytest.approx(0.75)
    assert table.loc["leaf (app.py)", "location"] == "app.py:9" and table["basis"].eq("busy thread time").all()


def test_call_tree_counts_under_stage_and_window_filters() -> None:
    stacks = StackTable()
    a = stacks.intern([("main", "f", 1), ("decode", "f", 2)])
    b = stacks.intern([("main", "f", 1), ("infer", "f", 3)])
    ids = np.array([a, a, b, b, b, b])
    ts = np.arange(6) * 100
    tree = CallTree(stacks, ids, ts, np.array(["decode"] * 2 + ["inference"] * 4, dtype=object))
    (main,) = tree.children(-1)
    assert tree.total[main] == 6 and [tree.frame(n)[0] for n in tree.children(main)] == ["infer", "decode"]
    tree.apply(TreeFilter(stage="decode"))
    assert tree.samples == 2 and [tree.frame(n)[0] for n in tree.children(main)] == ["decode"]
    tree.apply(TreeFilter(start_ns=100, end_ns=400))
    assert tree.samples == 3 and tree.total[main] == 3 and tree.own[b] == 2
    assert [tree.frame(n)[0] for n in tree.hot_path()] == ["main", "infer"]


def test_request_waterfall_and_batch_of_the_generated_session(tmp_path) -> None:
    from profiler.session import load

    session = load(make_tui_session(tmp_path / "demo"))
    source, measured = Measures(session.timeline, session.stacks, session.meta).request_table
    assert source == "loadgen"
    index = request_index(session.timeline, measured)
    assert len(index.table) == REQUESTS
    assert np.all(np.diff(index.table["latency_ms"].to_numpy()) <= 0)  # slowest first
    slowest = index.table.iloc[0]
    spans = index.waterfall(slowest["request_id"])
    stages = spans[spans["source"] == "stages"]["name"].tolist()
    assert stages[:4] == ["receive", "deserialize", "decode", "preprocess"] and stages[-1] == "serialize"
    assert spans["source"].tolist()[0] == "loadgen"  # the client's span opens the waterfall
    client = spans[spans["source"] == "loadgen"]["dur_ns"].iloc[0] / 1e6
    assert slowest["latency_ms"] == pytest.approx(client)
    assert index.batch_of(int(slowest["batch_id"])) == [slowest["request_id"]]
    assert isinstance(index.table, pd.DataFrame) and slowest["slowest_stage"] in ("queue", "inference")
