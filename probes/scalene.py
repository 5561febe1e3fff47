"""Scalene (optional): line-level CPU hotspots of a program run under ``scalene run --cpu-only``.

Scalene's JSON lists, per file and line, the CPU shares (Python, native, system) and the
``perf_counter`` time of every CPU sample it took there; ``start_time_absolute`` and
``start_time_perf`` anchor that clock to the epoch. Each sample becomes a ``sample`` event with
a one-frame stack (function, file, line); each line's shares become one ``instant`` event at
the profile's start, so the shares survive without repeating them on every sample.
Only ``--cpu-only`` is used: Scalene's default mode takes minutes with torch installed.
"""

from __future__ import annotations

import bisect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from profiler.timeline import StackTable, make_events, merge_events

SOURCE = "scalene"
_SHARES = ("n_cpu_percent_python", "n_cpu_percent_c", "n_sys_percent", "n_core_utilization")


class ScaleneError(RuntimeError):
    pass


def scalene_command(script: Path | str, args: list[str], out_json: Path) -> list[str]:
    """The command that runs ``script args...`` under Scalene, CPU only, writing ``out_json``."""
    binary = Path(sys.executable).parent / "scalene"
    executable = str(binary) if binary.exists() else shutil.which("scalene")
    if not executable:
        raise ScaleneError("scalene is not installed (pip install scalene)")
    command = [executable, "run", "--cpu-only", "-o", str(out_json), str(script)]
    return command + (["---", *args] if args else [])


def run_under_scalene(script: Path | str, args: list[str], out_json: Path, timeout_s: float = 300) -> Path:
    """Run a program to completion under Scalene and return its JSON profile."""
    result = subprocess.run(scalene_command(script, args, out_json), capture_output=True, text=True,
                            timeout=timeout_s)
    if result.returncode != 0 or not out_json.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ScaleneError(f"scalene failed (exit {result.returncode}): {tail[0]}")
    return out_json


def ingest_scalene(path: Path | str, stacks: StackTable) -> pd.DataFrame:
    try:
        profile = json.loads(Path(path).read_text())
        offset = float(profile["start_time_absolute"]) - float(profile["start_time_perf"])
        files = profile["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ScaleneError(f"{path}: not a Scalene JSON profile ({exc})") from None
    start_ns = int(round(float(profile["start_time_absolute"]) * 1e9))
    frames = []
    for filename, data in files.items():
        functions = sorted((int(f["lineno"]), str(f["line"])) for f in data.get("functions", []))
        starts = [lineno for lineno, _ in functions]
        for line in data.get("lines", []):
            times = line.get("cpu_samples_list") or []
            if not times:
                continue
            lineno = int(line["lineno"])
            index = bisect.bisect_right(starts, lineno) - 1
            function = functions[index][1] if index >= 0 else "<module>"
            stack_id = stacks.intern([(function, filename, lineno)])
            name = f"{function} ({Path(filename).name}:{lineno})"
            ts = np.round((np.asarray(times, dtype=np.float64) + offset) * 1e9).astype(np.int64)
            frames.append(make_events(ts_ns=ts, source=SOURCE, kind="sample", name=name, pid=-1,
                                      stack_id=stack_id, value=1.0))
            shares = {key: line.get(key, 0.0) for key in _SHARES}
            shares.update(file=filename, line=lineno, samples=len(times), text=line.get("line", "").strip())
            frames.append(make_events(ts_ns=[start_ns], source=SOURCE, kind="instant", name=name,
                                      args=[json.dumps(shares)]))
    return merge_events(frames)
