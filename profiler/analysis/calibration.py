"""Calibration: a short measurement of the model on this host, for gain estimates.

The diagnosis says what a fix would gain ("batching to 8 would serve each image 1.7x
faster", "int8-static would cut inference 3.5x"). Those factors depend on the CPU, the
thread count and the runtime versions, so they are measured here, on the real ResNet-18
artifacts — or on the user's own ONNX model (``--model``) — once per host and artifact, and
cached as JSON.

Every figure comes from one interleaved loop: each round runs every case once (forward,
then backward), so load from other processes on a shared machine lands on all cases alike
and ratios stay fair. Times are medians over the rounds, speedups medians of the per-round
ratios; ``spread`` keeps min/max per figure.

``load_or_calibrate`` measures in a fresh ``python -m profiler.analysis.calibration``
process by default: thread pools are fixed when torch first starts, and a caller that has
already run torch with other settings would distort the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from profiler.analysis.calibration_cases import (CPU_PRECISIONS, PRECISION_BATCHES, RUNTIMES, Case, Progress,
                                                 model_cases, sample_cases)
from profiler.analysis.calibration_model import (BATCH_SIZES, SAMPLE_MODEL, Calibration, CalibrationError,
                                                 HostKey, current_host)
from profiler.atomic import atomic_write_text
from samples.model import artifacts

ROUNDS = {"normal": 7, "quick": 3}
PROGRESS_PREFIX = "calibration: "
# Pause before each case when pools have worker threads: ORT's workers and OpenMP's spin for
# a while after a call, and on a small box the previous engine's spinners would steal cores
# from the next one (measured here: ORT fp32 batch 1 at 2 threads 17 -> 25 ms, torch eager
# 26 -> 83 ms without it). A server runs one engine, so its workers never meet others'.
SETTLE_S = 0.05
log = logging.getLogger(__name__)


def calibrate(threads: int = 1, quick: bool = False, progress: Progress | None = None,
              include_compile: bool = False, model: Path | None = None) -> Calibration:
    """Measure this host in this process (see :func:`load_or_calibrate` for the cached,
    isolated way). ``quick`` takes 3 rounds instead of 7, for tests; ``include_compile``
    adds torch.compile, which takes long to compile. ``model``: time that ONNX file (a
    user's image classifier, NCHW input) instead of the sample model: ORT fp32 at each batch
    size its input allows, INT8 static and dynamic quantizations of it, and its unoptimized
    graph; torch runtimes are skipped (there is no torch form of it)."""
    if threads < 1:
        raise ValueError("threads must be at least 1 (a fixed count: 0 would depend on the host)")
    say = progress or (lambda message: None)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    skipped: dict[str, str] = {}
    with _torch_threads(threads), tempfile.TemporaryDirectory(prefix="prof-calibration-") as scratch:
        say("loading model artifacts and engines")
        if model is None:
            sha = artifacts.ensure_artifact(artifacts.BuildSettings()).meta["onnx_sha256"]
            cases = sample_cases(threads, include_compile, skipped)
        else:
            sha = artifacts.sha256_file(model)
            cases = model_cases(Path(model), threads, skipped, Path(scratch), say)
        rounds = ROUNDS["quick" if quick else "normal"]
        samples = _interleaved(cases, rounds, say, SETTLE_S if threads > 1 else 0.0)
    calibration = _summarize(samples, current_host(threads), sha, rounds, skipped)
    calibration.model = SAMPLE_MODEL if model is None else str(Path(model).resolve())
    calibration.quick = quick
    calibration.duration_s = round(time.perf_counter() - started, 2)
    calibration.load_average = (round(load_before, 2), round(os.getloadavg()[0], 2))
    say(f"done in {calibration.duration_s:.1f} s")
    return calibration


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    # Pinned explicitly: torch's default (one thread per core) oversubscribes a small box
    # as soon as anything else runs. The caller's setting comes back afterwards.
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _interleaved(cases: list[Case], rounds: int, say: Progress, settle_s: float) -> dict[str, list[float]]:
    say(f"warming up {len(cases)} cases")
    for case in cases:
        time.sleep(settle_s)
        case.run()
    samples: dict[str, list[float]] = {case.label: [] for case in cases}
    for index in range(rounds):
        say(f"round {index + 1}/{rounds}")
        # Forward, then backward: each case follows a different one from round to round.
        for case in cases if index % 2 == 0 else cases[::-1]:
            time.sleep(settle_s)
            samples[case.label].append(case.run())
    return samples


def _summarize(samples: dict[str, list[float]], host: HostKey, sha: str, rounds: int,
               skipped: dict[str, str]) -> Calibration:
    spread: dict[str, tuple[float, float]] = {}

    def median_ms(label: str, figure: str) -> float:
        spread[figure] = (round(min(samples[label]), 3), round(max(samples[label]), 3))
        return round(statistics.median(samples[label]), 3)

    def speedup(base: str, alternative: str, figure: str) -> float:
        # Paired per round: both sides of a ratio ran moments apart, under the same load.
        ratios = [b / a for b, a in zip(samples[base], samples[alternative])]
        spread[figure] = (round(min(ratios), 3), round(max(ratios), 3))
        return round(statistics.median(ratios), 3)

    batch_ms = {b: median_ms(f"ort-fp32@{b}", f"batch_ms.{b}") for b in BATCH_SIZES if f"ort-fp32@{b}" in samples}
    runs = [("ort", p) for p in CPU_PRECISIONS] + [("ort-cuda", "fp16")] * ("ort-cuda-fp16@1" in samples)
    precision = {f"{p}@{b}": speedup(f"{run}-fp32@{b}", f"{run}-{p}@{b}", f"precision_speedup.{p}@{b}")
                 for run, p in runs for b in PRECISION_BATCHES if f"{run}-{p}@{b}" in samples}
    labels = {"ort": "ort-fp32@1"} | {name: f"{name}@1" for name in (*RUNTIMES[1:], "torch-compile")}
    runtime_ms = {name: median_ms(label, f"runtime_ms.{name}") for name, label in labels.items() if label in samples}
    first = min(batch_ms)
    opt = speedup(f"ort-fp32-noopt@{first}", f"ort-fp32@{first}", "ort_opt_speedup")
    return Calibration(host, sha, batch_ms, precision, runtime_ms, opt,
                       datetime.now(timezone.utc).isoformat(timespec="seconds"), rounds, spread, skipped)


def default_cache_dir() -> Path:
    """``<PROF_CACHE_DIR or ~/.cache/prof>/calibration``."""
    return Path(os.environ.get("PROF_CACHE_DIR") or Path.home() / ".cache" / "prof") / "calibration"


def cache_path(host: HostKey, artifact_sha256: str, cache_dir: Path | None = None) -> Path:
    """Where the calibration of ``host`` (threads included) and an artifact is cached."""
    directory = cache_dir or default_cache_dir()
    return directory / f"{host.digest()[:16]}-{artifact_sha256[:12]}-t{host.threads}.json"


def load_or_calibrate(threads: int = 1, cache_dir: Path | None = None, refresh: bool = False,
                      quick: bool = False, progress: Progress | None = None, isolated: bool = True,
                      include_compile: bool = False, model: Path | None = None) -> Calibration:
    """The cached calibration for this host, artifact (the sample model, or the ``model``
    file) and thread count, measuring it when missing, unreadable, stale or ``refresh``-ed. A
    quick calibration does not satisfy a normal request. ``isolated`` measures in a fresh
    Python process."""
    host = current_host(threads)
    if model is not None and not Path(model).is_file():
        raise CalibrationError(f"model file not found: {model}")
    sha = artifacts.ensure_artifact(artifacts.BuildSettings()).meta["onnx_sha256"] if model is None \
        else artifacts.sha256_file(model)
    path = cache_path(host, sha, cache_dir)
    if not refresh:
        cached = _read_cached(path, host, sha)
        if cached is not None and (quick or not cached.quick):
            return cached
    if isolated:
        calibration = calibrate_in_subprocess(threads, quick, progress, include_compile, model)
    else:
        calibration = calibrate(threads, quick, progress, include_compile, model)
    target = cache_path(calibration.host, calibration.artifact_sha256, cache_dir)
    try:
        atomic_write_text(target, json.dumps(calibration.to_dict(), indent=2, sort_keys=True))
    except OSError as exc:
        log.warning("could not cache the calibration in %s: %s", target, exc)
    return calibration


def cached_calibration(threads: int = 1, cache_dir: Path | None = None,
                       model: str = SAMPLE_MODEL) -> Calibration | None:
    """This host's newest cached calibration of ``model`` (the sample model, or a file's
    resolved path) at ``threads``, without measuring or building anything (for viewers that
    must not stall); None when there is none."""
    host = current_host(threads)
    candidates = sorted((cache_dir or default_cache_dir()).glob(f"{host.digest()[:16]}-*-t{threads}.json"),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            calibration = Calibration.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
        if calibration.host == host and not calibration.quick and calibration.model == model:
            return calibration
    return None


def _read_cached(path: Path, host: HostKey, sha: str) -> Calibration | None:
    if not path.is_file():
        return None
    try:
        calibration = Calibration.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        log.info("calibration cache %s is unreadable (%s); measuring again", path, exc)
        return None
    if calibration.host != host or calibration.artifact_sha256 != sha:
        log.info("calibration cache %s belongs to another host or artifact; measuring again", path)
        return None
    return calibration




def calibrate_in_subprocess(threads: int = 1, quick: bool = False, progress: Progress | None = None,
                            include_compile: bool = False, model: Path | None = None) -> Calibration:
    """:func:`calibrate` in a fresh interpreter whose OpenMP/MKL pools are sized before
    torch starts; its progress lines are passed to ``progress``."""
    command = [sys.executable, "-m", "profiler.analysis.calibration", "--threads", str(threads), "--json"]
    command += ["--quick"] * quick + ["--compile"] * include_compile + (["--model", str(model)] if model else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    other: list[str] = []
    # stdout goes to a file, not a pipe: stderr is read line by line meanwhile, and a full
    # stdout pipe nobody reads would block the child.
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        for line in child.stderr or ():
            if line.startswith(PROGRESS_PREFIX) and progress is not None:
                progress(line[len(PROGRESS_PREFIX):].rstrip("\n"))
            elif not line.startswith(PROGRESS_PREFIX):
                other = [*other[-19:], line.rstrip("\n")]
        returncode = child.wait()
        out.seek(0)
        text = out.read()
    if returncode == 2 and other and other[-1].startswith("calibration failed: "):
        raise CalibrationError(other[-1][len("calibration failed: "):])
    if returncode != 0:
        raise CalibrationError(f"calibration process exited with {returncode}: " + "\n".join(other))
    try:
        return Calibration.from_dict(json.loads(text))
    except ValueError as exc:
        raise CalibrationError(f"calibration process printed no calibration: {exc}") from exc


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # Native libraries may print to fd 1 while measuring; only the JSON may go there.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """``python -m profiler.analysis.calibration``: measure (uncached) and print the figures."""
    parser = argparse.ArgumentParser(description="Measure the sample model's speed factors on this host.")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for torch and ORT")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (for tests)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow)")
    parser.add_argument("--json", action="store_true", help="one line of JSON (default: indented JSON)")
    parser.add_argument("--model", type=Path, help="time this ONNX image classifier instead of the sample model")
    args = parser.parse_args(argv)

    def report(message: str) -> None:
        print(PROGRESS_PREFIX + message, file=sys.stderr, flush=True)

    try:
        with _stdout_to_stderr():
            calibration = calibrate(args.threads, args.quick, report, args.compile, args.model)
    except (CalibrationError, ValueError) as exc:
        print(f"calibration failed: {exc}", file=sys.stderr)
        return 2
    indent = None if args.json else 2
    print(json.dumps(calibration.to_dict(), indent=indent, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
