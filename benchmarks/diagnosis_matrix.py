"""The diagnosis matrix: profile servers with injected bottlenecks through `prof attach`
WITHOUT the agent (py-spy, psutil, the wire — what a server we did not write offers), check
what `prof report` names, then measure each fix's real gain (broken vs fixed, alternated, no
profiler attached) beside the estimate.

    .venv/bin/python benchmarks/diagnosis_matrix.py [--half dev|validation|all] [--seconds 10]
        [--rounds 2] [--only NAME,...] [--save runs.json] [--rescore runs.json]
    .venv/bin/python benchmarks/diagnosis_matrix.py --in-sample     the rules' own scenarios

Default: the independent corpus (benchmarks/scenarios/: servers, models and faults the rules
were not written against), split by a fixed seed into a development and a validation half;
both halves are scored separately. Scoring: a single bottleneck is right when the top finding
names it; a clean server when no finding is high or critical; a pair when both are found and
the one whose fix measured the larger gain ranks first; the gain is within ±30 % of the
measured fixed/broken throughput ratio. ``--in-sample``: the ten scenarios the rules were
written and tuned against (sample server, tests/foreign_server.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from samples.loadgen.runner import LoadRunner, LoadSpec  # noqa: E402
from samples.loadgen.workload import ImageMix  # noqa: E402
from samples.sample_server.process import ServerProcess, free_port  # noqa: E402

GOOD = ["--precision", "int8-static", "--max-batch", "8", "--max-wait-ms", "5", "--intra-op-threads", "1",
        "--agent", "0"]
FOREIGN = ROOT / "tests" / "foreign_server.py"


@dataclass(frozen=True)
class Scenario:
    name: str
    expected: str
    broken: list[str]  # sample-server knobs, or [mode] of the foreign server
    fixed: list[str]
    concurrency: int = 8
    image_size: str = "640x480"
    duplicates: float = 0.0
    foreign: bool = False
    threads: int = 1  # intra-op threads of the model, also those of the calibration


def knobs(*changes: str) -> list[str]:
    out = list(GOOD)
    for flag, value in zip(changes[::2], changes[1::2]):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


SCENARIOS = [
    # at one intra-op thread batching buys nothing on this CPU (measured x0.96): two threads it can fill
    Scenario("batching off, 16 clients, 2 threads", "batching-opportunity",
             knobs("--max-batch", "1", "--intra-op-threads", "2"), knobs("--intra-op-threads", "2"), 16, threads=2),
    Scenario("fp32 model on CPU", "reduced-precision", knobs("--precision", "fp32", "--max-batch", "1"),
             knobs("--max-batch", "1")),
    Scenario("60% repeated images, no cache", "cache-opportunity", knobs(), knobs("--cache", "lru"), duplicates=0.6),
    Scenario("12-megapixel JPEGs", "decode-bound", knobs(), knobs("--decode-draft", "1"), 4, "4000x3000"),
    Scenario("eager PyTorch", "runtime-switch", knobs("--backend", "torch-eager", "--precision", "fp32"),
             knobs("--precision", "fp32")),
    Scenario("model rebuilt per request", "model-reload", knobs("--reload-per-request", "1"), knobs(), 4),
    Scenario("4 intra-op threads on 2 cores", "thread-oversubscription", knobs("--intra-op-threads", "4"), knobs()),
    Scenario("JSON + base64 wrapping (foreign server)", "serialization-overhead", ["json"], ["clean"], 4, foreign=True),
    Scenario("pure-Python model in threads (foreign)", "gil-contention", ["gil"], ["clean"], 4, foreign=True),
    Scenario("periodic 400 ms stalls (foreign)", "latency-outliers", ["stalls"], ["clean"], 4, foreign=True),
]


class Target:
    """A running server of a scenario: the sample server or the foreign one."""

    def __init__(self, scenario: Scenario, config: list[str]) -> None:
        self.scenario, self.config = scenario, config
        self.port = free_port()
        self.server: ServerProcess | None = None
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Target:
        if self.scenario.foreign:
            self.process = subprocess.Popen([sys.executable, str(FOREIGN), str(self.port), self.config[0]])
            time.sleep(1.0)
        else:
            self.server = ServerProcess(self.config, port=self.port).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.stop()
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    @property
    def pid(self) -> int:
        return self.server.pid if self.server else self.process.pid  # type: ignore[union-attr]

    def load(self, seconds: float, warmup: float) -> tuple[float, float]:
        """(req/s, p50 ms) under the scenario's closed-loop load."""
        if self.scenario.foreign:
            return foreign_load(self.port, self.config[0], seconds, warmup, self.scenario.concurrency)
        spec = LoadSpec(url=f"http://127.0.0.1:{self.port}/classify", concurrency=self.scenario.concurrency,
                        duration_s=seconds, warmup_s=warmup, payload="raw", seed=3)
        mix = ImageMix([self.scenario.image_size], ["jpeg"], self.scenario.duplicates, 3)
        state = asyncio.run(LoadRunner(spec, mix).run())
        ok = [r for r in state.records if not r.warmup and r.status == 200]
        if not ok:
            return 0.0, float("nan")
        span = (max(r.start_ns + r.latency_ns for r in ok) - min(r.start_ns for r in ok)) / 1e9
        return len(ok) / span, statistics.median(r.latency_ns / 1e6 for r in ok)


def foreign_load(port: int, mode: str, seconds: float, warmup: float, clients: int) -> tuple[float, float]:
    import http.client

    start, end = time.monotonic() + warmup, time.monotonic() + warmup + seconds
    latencies: list[float] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < end:
            image = os.urandom(60_000)  # every body new: repeats would be a cache finding of their own
            body = json.dumps({"image": base64.b64encode(image).decode()}).encode() if mode == "json" else image
            t0 = time.monotonic()
            connection.request("POST", "/classify", body)
            connection.getresponse().read()
            if t0 >= start:
                latencies.append((time.monotonic() - t0) * 1000)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / seconds, statistics.median(latencies) if latencies else float("nan")


def diagnose_by_attach(scenario: Scenario, seconds: float, scratch: Path) -> dict:
    """Attach to the broken server while it is under load; the report's JSON."""
    out = scratch / scenario.expected / "session"
    with Target(scenario, scenario.broken) as target:
        target.load(2.0, 1.0)  # warm
        attach = subprocess.Popen([sys.executable, "-m", "profiler.cli", "attach", str(target.pid), "--duration",
                                   str(seconds), "--out", str(out), "--quiet"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT)
        time.sleep(1.5)
        target.load(seconds - 1.0, 0.0)
        attach.communicate(timeout=300)
    # the calibration runs the model with the scenario's intra-op threads (the broken thread scenario
    # is the good configuration's one thread, oversubscribed)
    report = subprocess.run([sys.executable, "-m", "profiler.cli", "report", str(out), "--json",
                             "--calibration-threads", str(scenario.threads)],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    if report.returncode != 0:
        raise RuntimeError(report.stderr)
    return json.loads(report.stdout)


def measured_gain(scenario: Scenario, seconds: float, rounds: int) -> tuple[float, list[float]]:
    ratios = []
    for round_index in range(rounds):
        order = [("broken", scenario.broken), ("fixed", scenario.fixed)]
        if round_index % 2:
            order.reverse()
        rates = {}
        for label, config in order:
            with Target(scenario, config) as target:
                rates[label] = target.load(seconds, 2.0)[0]
        ratios.append(rates["fixed"] / rates["broken"] if rates["broken"] else float("nan"))
    return statistics.median(ratios), ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="attach window and each measuring run")
    parser.add_argument("--rounds", type=int, default=2, help="broken/fixed alternations for the measured gain")
    parser.add_argument("--only", help="comma list of scenario names (in-sample: expected rule ids) to run")
    parser.add_argument("--in-sample", action="store_true", help="the rules' own ten scenarios instead of the corpus")
    parser.add_argument("--half", choices=["dev", "validation", "all"], default="all", help="which half of the corpus")
    parser.add_argument("--save", type=Path, help="append each scenario's raw result (JSON lines) here")
    parser.add_argument("--rescore", type=Path, help="score saved results again instead of running")
    parser.add_argument("--keep", type=Path, help="keep each scenario's session under this folder (prof report on it)")
    args = parser.parse_args()
    if not args.in_sample:
        from benchmarks.corpus_matrix import run_corpus

        return run_corpus(args)
    chosen = [s for s in SCENARIOS if not args.only or s.expected in args.only.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for scenario in chosen:
            print(f"== {scenario.name}", file=sys.stderr)
            report = diagnose_by_attach(scenario, args.seconds, Path(scratch))
            findings = report["findings"]
            top = findings[0]["rule"] if findings else "(none)"
            mine = next((f for f in findings if f["rule"] == scenario.expected), None)
            estimated = (mine or {}).get("estimated_gain") or {}
            measured, ratios = measured_gain(scenario, args.seconds, args.rounds)
            rows.append((scenario, top, [f["rule"] for f in findings[:3]], estimated.get("throughput_x"), measured,
                         ratios))
            print(f"   top-1 {top}; estimated {estimated.get('throughput_x')}; measured {measured:.2f} {ratios}",
                  file=sys.stderr)
    print(f"\nprof attach (no agent) {args.seconds:g} s under closed-loop load; measured gain = fixed/broken "
          f"throughput, median of {args.rounds} alternated rounds, no profiler attached\n")
    print("| injected bottleneck | expected | top-1 finding | ok | next findings | estimated x | measured x | "
          "error |")
    print("|---|---|---|---|---|---|---|---|")
    for scenario, top, firsts, estimated, measured, ratios in rows:
        error = f"{(estimated - measured) / measured:+.0%}" if estimated and measured else "n/a"
        print(f"| {scenario.name} | {scenario.expected} | {top} | {'yes' if top == scenario.expected else 'NO'} | "
              f"{', '.join(firsts[1:]) or '-'} | {estimated if estimated is not None else 'n/a'} | "
              f"{measured:.2f} [{', '.join(f'{r:.2f}' for r in ratios)}] | {error} |")
    correct = sum(top == s.expected for s, top, *_ in rows)
    print(f"\ntop-1 correct: {correct} of {len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
