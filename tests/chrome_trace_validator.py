"""A structural validator for Chrome Trace Event JSON, used by the export tests."""

from __future__ import annotations

from collections import defaultdict

PHASES = {"X", "B", "E", "i", "I", "C", "M", "s", "t", "f"}


def validate_chrome_trace(trace: dict) -> list[str]:
    """Problems found (empty when the trace is well formed)."""
    problems = []
    events = trace.get("traceEvents")
    if not isinstance(events, list):
        return ["no traceEvents list"]
    named_processes = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    named_threads = {(e["pid"], e["tid"]) for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"}
    lanes = defaultdict(list)
    flows = defaultdict(list)
    for n, event in enumerate(events):
        phase = event.get("ph")
        if phase not in PHASES:
            problems.append(f"event {n}: unknown phase {phase!r}")
            continue
        if phase == "M":
            continue
        for key in ("name", "pid", "ts"):
            if key not in event:
                problems.append(f"event {n}: missing {key}")
        if not isinstance(event.get("ts"), (int, float)) or event.get("ts", 0) < 0:
            problems.append(f"event {n}: bad ts {event.get('ts')!r}")
        if event.get("pid") not in named_processes:
            problems.append(f"event {n}: pid {event.get('pid')} has no process_name")
        if phase == "X":
            if not isinstance(event.get("dur"), (int, float)) or event["dur"] < 0:
                problems.append(f"event {n}: X without a valid dur")
            if (event["pid"], event.get("tid")) not in named_threads:
                problems.append(f"event {n}: thread {event.get('tid')} has no thread_name")
            lanes[(event["pid"], event.get("tid"))].append((event["ts"], event["ts"] + event.get("dur", 0), n))
        if phase in ("s", "f"):
            flows[event.get("id")].append(phase)
    for lane, spans in lanes.items():
        problems.extend(_nesting_problems(lane, spans))
    for flow_id, phases in flows.items():
        if sorted(phases) != ["f", "s"]:
            problems.append(f"flow {flow_id}: phases {phases} (need one s and one f)")
    return problems


def _nesting_problems(lane, spans, slack_us: float = 0.0015) -> list[str]:
    """Slices on one thread must nest: each starts and ends inside every open slice."""
    problems = []
    stack: list[tuple[float, float, int]] = []
    for start, end, n in sorted(spans, key=lambda s: (s[0], -s[1])):
        while stack and stack[-1][1] <= start + slack_us:
            stack.pop()
        if stack and end > stack[-1][1] + slack_us:
            problems.append(f"lane {lane}: event {n} [{start}, {end}] overlaps event {stack[-1][2]} "
                            f"[{stack[-1][0]}, {stack[-1][1]}] without nesting")
            if len(problems) > 5:
                break
        stack.append((start, end, n))
    return problems
