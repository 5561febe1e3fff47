"""What each probe costs the sample server's throughput, measured side by side.

One sample server runs throughout (so start-up never enters the figures); each round takes
every configuration in turn under the same closed-loop load, and each configuration's
throughput is divided by the probes-off run of its own round. In-process probes (stage
spans, ORT per-node profiling, torch.profiler) are switched through the server's agent, as
``prof attach`` does; py-spy and the psutil sampler run as they do in ``prof run``.

    .venv/bin/python benchmarks/overhead.py [--rounds 3] [--seconds 8] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probes import agent as agent_probe  # noqa: E402
from probes import proc, pyspy  # noqa: E402
from probes.http import probe as wire  # noqa: E402
from profiler.collect import DEFAULT_PROBES, DEFAULT_PYSPY_RATE  # noqa: E402
from samples.loadgen.runner import LoadRunner, LoadSpec  # noqa: E402
from samples.loadgen.workload import ImageMix  # noqa: E402
from samples.sample_server.process import ServerProcess  # noqa: E402

# name -> (py-spy rate or None, GIL snapshots per second, gc watch per second, proc sampler, agent
# probes, wire capture)
SNAPSHOT_HZ = pyspy.PySpyOptions().snapshot_hz
GC_HZ = pyspy.PySpyOptions().gc_watch_hz
CONFIGS = {
    "off": (None, 0.0, 0, False, (), False),
    f"default set ({', '.join(sorted(DEFAULT_PROBES - {'nvml'}))})":
        (DEFAULT_PYSPY_RATE, SNAPSHOT_HZ, GC_HZ, True, ("stages",), True),
    f"default set without the gc watch ({GC_HZ} Hz native)":
        (DEFAULT_PYSPY_RATE, SNAPSHOT_HZ, 0, True, ("stages",), True),
    f"py-spy {DEFAULT_PYSPY_RATE} Hz + GIL snapshots {SNAPSHOT_HZ:g} Hz":
        (DEFAULT_PYSPY_RATE, SNAPSHOT_HZ, 0, False, (), False),
    f"py-spy {DEFAULT_PYSPY_RATE} Hz, no GIL snapshots": (DEFAULT_PYSPY_RATE, 0.0, 0, False, (), False),
    "py-spy 100 Hz": (100, SNAPSHOT_HZ, 0, False, (), False),
    "py-spy 1000 Hz": (1000, SNAPSHOT_HZ, 0, False, (), False),
    "proc (psutil, 10 Hz)": (None, 0.0, 0, True, (), False),
    "http (wire capture)": (None, 0.0, 0, False, (), True),
    "stage spans": (None, 0.0, 0, False, ("stages",), False),
    "framework profiling": (None, 0.0, 0, False, ("framework",), False),
}


def throughput(url: str, seconds: float, concurrency: int) -> float:
    spec = LoadSpec(url=f"{url}/classify", concurrency=concurrency, rate=None, duration_s=seconds, requests=None,
                    warmup_s=1.0, payload="raw", accept_msgpack=False, timeout_s=30.0, seed=1)
    state = asyncio.run(LoadRunner(spec, ImageMix(["640x480"], ["jpeg"], 0.0, 1)).run())
    ok = [r for r in state.records if not r.warmup and r.status == 200]
    if not ok:
        return 0.0
    first = min(r.start_ns for r in ok)
    last = max(r.start_ns + r.latency_ns for r in ok)
    return len(ok) / ((last - first) / 1e9)


def measure(server: ServerProcess, config: tuple, seconds: float, concurrency: int, scratch: Path,
            cpu: list[float] | None = None) -> float:
    """Throughput under the config; appends to ``cpu`` the CPU seconds the out-of-server probes
    (py-spy, the psutil sampler thread, the wire capture) spent per second of the window."""
    rate, snapshot_hz, gc_hz, with_proc, agent_probes, with_wire = config
    out = Path(tempfile.mkdtemp(dir=scratch))
    recorder = sampler = client = capture = None
    spent, started = 0.0, time.monotonic()
    try:
        if rate:
            recorder = pyspy.PySpyRecorder(server.pid, out / "pyspy",
                                           pyspy.PySpyOptions(rate=rate, snapshot_hz=snapshot_hz,
                                                              gc_watch_hz=gc_hz))
            recorder.start()
        if with_proc:
            sampler = proc.ProcSampler(server.pid, out / "proc")
            sampler.start()
        if with_wire:
            capture = wire.WireProbe(server.pid, out / "http")
            capture.start()
        if agent_probes:
            client = agent_probe.AgentClient(server.pid)
            client.request("start", out_dir=str(out), probes=list(agent_probes))
        before, started = _probe_cpu_s(recorder, sampler), time.monotonic()
        result = throughput(server.url, seconds, concurrency)
        spent = _probe_cpu_s(recorder, sampler) - before
        return result
    finally:
        if client is not None:
            client.request("stop")
            client.close()
        if sampler is not None:
            sampler.stop()
        if recorder is not None:
            recorder.stop()
        if capture is not None:
            spent += capture.stop().get("cpu_s", 0.0)  # its start-up included: an upper bound
        if cpu is not None:
            cpu.append(spent / max(time.monotonic() - started, 1e-9))


def _probe_cpu_s(recorder, sampler) -> float:
    """CPU seconds so far of py-spy (its own process, the gc watch's, and the finished ``py-spy
    dump`` children of the GIL snapshots) and of the psutil sampler's thread."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = children.ru_utime + children.ru_stime
    for child in (recorder.process, recorder.gc_watch and recorder.gc_watch.process) if recorder is not None else ():
        if child is None:
            continue
        try:
            times = psutil.Process(child.pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    if sampler is not None and sampler._thread is not None:
        native = sampler._thread.native_id
        total += sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id == native)
    return total


def run_backend(backend: str, configs: dict, args: argparse.Namespace, scratch: Path) -> dict[str, tuple]:
    ratios: dict[str, list[float]] = {name: [] for name in configs}
    rates: dict[str, list[float]] = {name: [] for name in configs}
    cpus: dict[str, list[float]] = {name: [] for name in configs}
    with ServerProcess(["--backend", backend, "--intra-op-threads", "1"]) as server:
        throughput(server.url, 3.0, args.concurrency)  # warm the server (first requests are slow)
        for round_index in range(args.rounds):
            order = list(configs) if round_index % 2 == 0 else list(reversed(configs))  # A/B/B/A
            results = {name: measure(server, configs[name], args.seconds, args.concurrency, scratch, cpus[name])
                       for name in order}
            for name, value in results.items():
                rates[name].append(value)
                ratios[name].append(value / results["off"] if results["off"] else float("nan"))
            print(f"  {backend} round {round_index + 1}: " + ", ".join(f"{n}: {v:.1f}" for n, v in results.items()),
                  file=sys.stderr)
    return {name: (rates[name], ratios[name], cpus[name]) for name in configs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--default-only", action="store_true",
                        help="only probes-off vs the default set (more rounds in the same time: the 2%% check)")
    parser.add_argument("--only", help="comma list of words: only the configurations whose name holds one "
                        "(probes-off always runs), e.g. --only py-spy,default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.default_only or args.only:
            words = ["default"] if args.default_only else [w.strip() for w in args.only.split(",") if w.strip()]
            configs = {name: config for name, config in CONFIGS.items()
                       if name == "off" or any(word in name for word in words)}
            ort = run_backend("ort", configs, args, Path(scratch))
            torch = {}
        else:
            ort = run_backend("ort", CONFIGS, args, Path(scratch))
            torch = run_backend("torch-eager", {"off": CONFIGS["off"],
                                                "torch.profiler": CONFIGS["framework profiling"]}, args,
                                Path(scratch))
    print(f"sample server (1 worker, ORT/torch 1 intra-op thread), closed loop {args.concurrency} clients, "
          f"{args.seconds:g} s per run, {args.rounds} rounds alternating order; ratio = throughput / probes-off "
          "of the same round; probe CPU = CPU seconds of py-spy, the psutil sampler and the wire capture per "
          "second of the window, over all cores (stage spans and framework profiling run inside the server)\n")
    cores = psutil.cpu_count() or 1
    print(f"| backend | probes | req/s median [min..max] | ratio median [min..max] | probe CPU, % of the "
          f"{cores}-core machine |\n|---|---|---|---|---|")
    for backend, results in (("ort", ort), ("torch-eager", torch)):
        if not results:
            continue
        for name, (rates, ratios, cpu) in results.items():
            label = "ORT per-node profiling" if name == "framework profiling" else name
            machine = f"{100 * statistics.median(cpu) / cores:.2f} [{100 * min(cpu) / cores:.2f}.." \
                      f"{100 * max(cpu) / cores:.2f}]" if any(cpu) else "in the server"
            print(f"| {backend} | {label} | {statistics.median(rates):.1f} [{min(rates):.1f}..{max(rates):.1f}] | "
                  f"{statistics.median(ratios):.3f} [{min(ratios):.3f}..{max(ratios):.3f}] | {machine} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
