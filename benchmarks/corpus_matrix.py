"""The diagnosis matrix over the independent scenario corpus (benchmarks/scenarios/), run by
``benchmarks/diagnosis_matrix.py`` (see its doc for the command line and the scoring).

Per scenario: start the broken server, warm it, ``prof attach PID`` (no agent) while the
corpus's own closed-loop load drives it, ``prof report --json`` (which times the model the
attach found, once per host), then measure every fix: fixed vs broken throughput under the
same load, alternated over rounds, no profiler attached. Each scenario's raw result can be
saved (``--save``) and scored again (``--rescore``) without re-running.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.scenarios.corpus import SCENARIOS, Scenario, ScenarioServer, split  # noqa: E402
from benchmarks.scenarios.load import base_images, run_load  # noqa: E402

TOLERANCE = 0.30
BAD_SEVERITY = ("high", "critical")


def diagnose(scenario: Scenario, seconds: float, scratch: Path) -> dict[str, Any]:
    """The report (JSON) of ``prof attach`` on the broken server under its load."""
    out = scratch / "session"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    with ScenarioServer(scenario.server, feature_service=scenario.needs_feature_service) as server:
        run_load(server.port, seconds=2.0, warmup=1.0, seed=1, **scenario.load.kwargs())
        # the attach window's bodies are generated before it opens (12-megapixel JPEGs take a
        # second each: generated inside the window, the server sat idle through all of it)
        base_images(*scenario.load.image_size, 2)  # positional: the cache key load.Bodies uses
        attach = subprocess.Popen([sys.executable, "-m", "profiler.cli", "attach", str(server.pid), "--duration",
                                   str(seconds), "--out", str(out), "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        load: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: load.update(
            run_load(server.port, seconds=max(seconds - 2.0, 2.0), warmup=1.0, seed=2, **scenario.load.kwargs())))
        time.sleep(0.5)
        worker.start()
        _, stderr = attach.communicate(timeout=600)
        worker.join()
        if attach.returncode != 0:
            raise RuntimeError(f"prof attach failed: {stderr.strip()[-2000:]}")
        if not load.get("count"):
            raise RuntimeError("no request was answered while prof attach ran: the diagnosis would be of an idle server")
    report = subprocess.run([sys.executable, "-m", "profiler.cli", "report", str(out), "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    if report.returncode != 0:
        raise RuntimeError(f"prof report failed: {report.stderr.strip()[-2000:]}")
    return {"report": json.loads(report.stdout), "load_during_attach": load}


def measure(scenario: Scenario, seconds: float, rounds: int) -> list[dict[str, Any]]:
    """Per fix: fixed/broken throughput ratios of alternated rounds, no profiler attached."""
    results = []
    for index, (args, load) in enumerate(scenario.fixed_variants()):
        ratios, rates = [], []
        for round_index in range(rounds):
            order = [("broken", scenario.server, scenario.load), ("fixed", args, load)]
            if round_index % 2:
                order.reverse()
            rate = {}
            for label, server_args, server_load in order:
                with ScenarioServer(server_args, feature_service=scenario.needs_feature_service) as server:
                    rate[label] = run_load(server.port, seconds=seconds, warmup=2.0, seed=3 + round_index,
                                           **server_load.kwargs())["rps"]
            rates.append(rate)
            ratios.append(rate["fixed"] / rate["broken"] if rate["broken"] else float("nan"))
        results.append({"fix": index, "rule": scenario.expected[index], "ratios": ratios,
                        "measured_x": statistics.median(ratios), "rates": rates})
    return results


def run_one(scenario: Scenario, half: str, seconds: float, rounds: int, keep: Path | None = None) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="prof-corpus-") as scratch:
        work = keep / scenario.name if keep else Path(scratch)
        try:
            diagnosed = diagnose(scenario, seconds, work)
            measured = measure(scenario, seconds, rounds)
            error = None
        except Exception as exc:  # one scenario's failure is a row of the table, not the end of the run
            diagnosed, measured, error = {"report": {"findings": []}}, [], f"{type(exc).__name__}: {exc}"
    findings = [{"rule": f["rule"], "severity": f["severity"], "share": f["share"], "title": f["title"],
                 "gain": (f.get("estimated_gain") or {}).get("throughput_x"),
                 "method": (f.get("estimated_gain") or {}).get("method")}
                for f in diagnosed["report"].get("findings", [])]
    return {"name": scenario.name, "kind": scenario.kind, "half": half, "expected": list(scenario.expected),
            "framework": scenario.framework, "model": scenario.model, "runtime": scenario.runtime,
            "findings": findings, "notes": diagnosed["report"].get("notes", []), "measured": measured,
            "load_during_attach": diagnosed.get("load_during_attach"), "error": error,
            "seconds": round(time.monotonic() - started, 1)}


def score(row: dict[str, Any]) -> dict[str, Any]:
    """Right or wrong, and each estimated gain against its measured one."""
    findings, rules = row["findings"], [f["rule"] for f in row["findings"]]
    gains = []
    for m in row["measured"]:
        mine = next((f for f in findings if f["rule"] == m["rule"]), None)
        estimate = mine["gain"] if mine else None
        error = (estimate - m["measured_x"]) / m["measured_x"] if estimate and m["measured_x"] else None
        gains.append({"rule": m["rule"], "estimated": estimate, "measured": m["measured_x"], "error": error,
                      "within": error is not None and abs(error) <= TOLERANCE})
    if row["error"]:
        right = False
    elif row["kind"] == "clean":
        right = not any(f["severity"] in BAD_SEVERITY for f in findings)
    elif row["kind"] == "single":
        right = bool(rules) and rules[0] == row["expected"][0]
    else:
        larger = max(row["measured"], key=lambda m: m["measured_x"])["rule"] if row["measured"] else \
            row["expected"][0]
        smaller = next(r for r in row["expected"] if r != larger) if len(set(row["expected"])) > 1 else larger
        right = larger in rules and smaller in rules and rules.index(larger) <= rules.index(smaller)
    return {"right": right, "gains": gains}


def table(rows: list[dict[str, Any]], title: str) -> list[str]:
    lines = [f"### {title}", "", "| scenario | kind | server | expected | findings (top 3) | ok | estimated x | "
             "measured x [rounds] | error |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        scored = score(row)
        top = ", ".join(f"{f['rule']} ({f['severity']})" for f in row["findings"][:3]) or "-"
        if row["error"]:
            top = f"ERROR: {row['error'][:120]}"
        estimated = "; ".join(f"{g['estimated']:.2f}" if g["estimated"] else "n/a" for g in scored["gains"]) or "-"
        measured = "; ".join(f"{m['measured_x']:.2f} [{', '.join(f'{r:.2f}' for r in m['ratios'])}]"
                             for m in row["measured"]) or "-"
        errors = "; ".join(f"{g['error']:+.0%}" if g["error"] is not None else "n/a" for g in scored["gains"]) or "-"
        lines.append(f"| {row['name']} | {row['kind']} | {row['framework']}/{row['model']}/{row['runtime']} | "
                     f"{', '.join(row['expected']) or '(clean)'} | {top} | {'yes' if scored['right'] else 'NO'} | "
                     f"{estimated} | {measured} | {errors} |")
    return lines


def summary(rows: list[dict[str, Any]], half: str) -> str:
    scored = [(row, score(row)) for row in rows]
    singles = [s for r, s in scored if r["kind"] == "single"]
    clean = [s for r, s in scored if r["kind"] == "clean"]
    pairs = [s for r, s in scored if r["kind"] == "pair"]
    gains = [g for _, s in scored for g in s["gains"]]

    def rate(items: list, key: str = "right") -> str:
        return f"{sum(bool(i[key]) for i in items)}/{len(items)}" if items else "0/0"

    return (f"| {half} | {len(rows)} | {rate(singles)} | {rate(clean)} | {rate(pairs)} | "
            f"{rate([{'right': s['right']} for _, s in scored])} | {rate(gains, 'within')} |")


def run_corpus(args) -> int:
    dev, validation = split()
    halves = {"dev": dev, "validation": validation}
    if args.rescore:
        rows = [json.loads(line) for line in args.rescore.read_text().splitlines() if line.strip()]
    else:
        chosen = [(half, s) for half in ("dev", "validation") if args.half in (half, "all") for s in halves[half]]
        if args.only:
            names = set(args.only.split(","))
            chosen = [(h, s) for h, s in chosen if s.name in names]
        rows = []
        for i, (half, scenario) in enumerate(chosen, 1):
            print(f"== [{i}/{len(chosen)}] {half}: {scenario.name}", file=sys.stderr, flush=True)
            row = run_one(scenario, half, args.seconds, args.rounds, args.keep)
            scored = score(row)
            print(f"   {'right' if scored['right'] else 'WRONG'}: {[f['rule'] for f in row['findings'][:3]]} "
                  f"gains {[(g['estimated'], round(g['measured'], 2)) for g in scored['gains']]} "
                  f"{row['error'] or ''} ({row['seconds']} s)", file=sys.stderr, flush=True)
            rows.append(row)
            if args.save:
                with open(args.save, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
    print(f"corpus: {len(SCENARIOS)} scenarios, split by seed 20261207 into {len(dev)} development and "
          f"{len(validation)} validation; prof attach (no agent) {args.seconds:g} s under each scenario's "
          f"closed-loop load; measured gain = fixed/broken throughput, median of {args.rounds} alternated rounds, "
          "no profiler attached\n")
    print("| half | scenarios | single: top-1 right | clean: no high/critical | pairs: both, larger first | "
          "all right | gains within ±30 % |")
    print("|---|---|---|---|---|---|---|")
    for half in ("dev", "validation"):
        mine = [r for r in rows if r["half"] == half]
        if mine:
            print(summary(mine, half))
    for half, title in (("dev", "Development half (rules and constants may be fitted here)"),
                        ("validation", "Validation half (held out: never fitted on)")):
        mine = [r for r in rows if r["half"] == half]
        if mine:
            print()
            print("\n".join(table(mine, title)))
    return 0
