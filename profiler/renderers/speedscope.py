"""speedscope JSON (https://www.speedscope.app) of the sampled stacks: one sampled profile
per (process, thread), weights in nanoseconds, frames shared across profiles."""

from __future__ import annotations

import json

import pandas as pd

from profiler.timeline import StackTable

SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def render_speedscope(events: pd.DataFrame, stacks: StackTable, name: str = "prof") -> bytes:
    samples = events[events["kind"] == "sample"]
    frame_index: dict[int, int] = {}
    frames: list[dict] = []
    profiles = []
    for (pid, tid), group in samples.groupby(["pid", "tid"], observed=True, sort=True):
        group = group.sort_values("ts_ns")
        stacks_out, weights = [], []
        for stack_id, dur in zip(group["stack_id"].to_numpy(), group["dur_ns"].to_numpy()):
            stacks_out.append(_frame_ids(int(stack_id), stacks, frame_index, frames))
            weights.append(int(max(dur, 1)))
        start = int(group["ts_ns"].min())
        profiles.append({"type": "sampled", "name": f"pid {pid} tid {tid}", "unit": "nanoseconds",
                         "startValue": 0, "endValue": int(sum(weights)), "samples": stacks_out,
                         "weights": weights, "startEpochNs": start})
    document = {"$schema": SCHEMA, "name": name, "exporter": "prof", "activeProfileIndex": 0,
                "shared": {"frames": frames}, "profiles": profiles}
    return json.dumps(document, separators=(",", ":")).encode()


def _frame_ids(stack_id: int, stacks: StackTable, index: dict[int, int], frames: list[dict]) -> list[int]:
    ids = []
    node = stack_id
    while node >= 0:
        frame = stacks.node_frames[node]
        if frame not in index:
            index[frame] = len(frames)
            frames.append({"name": stacks.functions[frame], "file": stacks.files[frame], "line": stacks.lines[frame]})
        ids.append(index[frame])
        node = stacks.parents[node]
    return ids[::-1]
