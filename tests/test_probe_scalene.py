"""Real Scalene (CPU only) on a real program."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from probes.scalene import ScaleneError, ingest_scalene, run_under_scalene
from profiler.timeline import StackTable, validate

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs

PROGRAM = """
import time

def hot(n):
    x = 0
    for i in range(n):
        x += i * i
    return x

def cool(n):
    return sum(range(n))

end = time.time() + 1.5
while time.time() < end:
    hot(200000)
    cool(20000)
"""


def test_line_hotspots_with_sample_times(tmp_path: Path) -> None:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    before = time.time_ns()
    profile = run_under_scalene(script, [], tmp_path / "scalene.json")
    after = time.time_ns()
    stacks = StackTable()
    events = ingest_scalene(profile, stacks)
    validate(events)
    samples = events[events["kind"] == "sample"]
    assert len(samples) > 20
    assert samples["ts_ns"].between(before, after).all()  # sample times on the epoch clock
    counts = samples.groupby("name", observed=True).size().sort_values(ascending=False)
    top = counts.index[0]
    assert top.startswith("hot (program.py:")
    frame = stacks.frames_of(int(samples[samples["name"] == top]["stack_id"].iloc[0]))[0]
    assert frame[0] == "hot" and frame[1].endswith("program.py") and 5 <= frame[2] <= 7
    shares = [json.loads(a) for a in events[events["kind"] == "instant"]["args"]]
    assert max(shares, key=lambda s: s["samples"])["text"].startswith(("x += i * i", "for i in range(n)"))


def test_broken_profile_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "scalene.json"
    bad.write_text('{"files": {}}')
    with pytest.raises(ScaleneError, match="not a Scalene JSON profile"):
        ingest_scalene(bad, StackTable())
