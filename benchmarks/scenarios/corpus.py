"""The scenario corpus: servers with injected bottlenecks, their fixes and their loads.

    from benchmarks.scenarios.corpus import SCENARIOS, ScenarioServer, split
    from benchmarks.scenarios.load import run_load

    scenario = SCENARIOS[0]
    with ScenarioServer(scenario.server, feature_service=scenario.needs_feature_service) as s:
        ...  # s.pid, s.port; e.g. `prof attach s.pid` while:
        run_load(s.port, **scenario.load.kwargs())
    for args, load in scenario.fixed_variants():
        with ScenarioServer(args, feature_service=scenario.needs_feature_service) as s:
            run_load(s.port, **load.kwargs())

Kinds: "single" (one bottleneck, one fix), "pair" (two bottlenecks of clearly different
sizes, the larger first in ``expected``; one fix per bottleneck, fixing only that one) and
"clean" (no injected bottleneck, no fix). ``expected`` holds prof rule ids.
"""

from __future__ import annotations

import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SERVER = HERE / "server.py"
FEATURE_SERVICE = HERE / "feature_service.py"

# fault -> the prof rule that should name it
RULES = {
    "lock": "implicit-queue",
    "executor1": "implicit-queue",
    "native-threads": "thread-oversubscription",
    "gc": "gc-pauses",
    "logging": "blocking-io",
    "downstream": "downstream-wait",
    "json": "serialization-overhead",
    "python-preprocess": "preprocess-bound",
    "big-decode": "decode-bound",
    "fp32": "reduced-precision",
    "unfused": "graph-fusion",
    "eager": "runtime-switch",
    "reload": "model-reload",
    "no-batching": "batching-opportunity",
    "stalls": "latency-outliers",
    "gil-postprocess": "gil-contention",
    "repeats": "cache-opportunity",
}


@dataclass(frozen=True)
class Load:
    clients: int = 8
    payload: str = "raw"  # "raw" JPEG bodies or "json" ({"image": base64})
    image_size: tuple[int, int] = (640, 480)
    repeats: float = 0.0  # fraction of requests that re-send one of a few exact bodies

    def kwargs(self) -> dict:
        """Keyword arguments of ``load.run_load`` (add port, seconds, warmup, seed)."""
        return {"clients": self.clients, "payload": self.payload, "image_size": self.image_size,
                "repeats": self.repeats}


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "single" | "pair" | "clean"
    expected: tuple[str, ...]  # prof rule ids, the larger bottleneck first; () for clean
    server: list[str]  # server.py arguments of the broken variant (no --port)
    fixes: tuple[list[str], ...]  # server.py arguments of each fixed variant, in `expected` order
    load: Load = field(default_factory=Load)
    # the load of each fixed variant where it differs from `load` (the json fix sends raw bytes)
    fix_loads: tuple[Load | None, ...] = ()
    needs_feature_service: bool = False
    note: str = ""

    def load_of_fix(self, index: int) -> Load:
        if index < len(self.fix_loads) and self.fix_loads[index] is not None:
            return self.fix_loads[index]
        return self.load

    def fixed_variants(self) -> list[tuple[list[str], Load]]:
        return [(list(args), self.load_of_fix(i)) for i, args in enumerate(self.fixes)]

    @property
    def framework(self) -> str:
        return _arg(self.server, "--framework", "httpserver")

    @property
    def model(self) -> str:
        return _arg(self.server, "--model", "resnet")

    @property
    def runtime(self) -> str:
        return "torch" if "eager" in self.faults else _arg(self.server, "--runtime", "ort")

    @property
    def faults(self) -> tuple[str, ...]:
        return tuple(self.server[i + 1] for i, a in enumerate(self.server) if a == "--fault")


def _arg(args: list[str], flag: str, default: str) -> str:
    return args[args.index(flag) + 1] if flag in args else default


def _without(args: list[str], fault: str) -> list[str]:
    out, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a == "--fault" and i + 1 < len(args) and args[i + 1] == fault:
            skip = True
            continue
        out.append(a)
    return out


def _base(framework: str, model: str, runtime: str = "ort", *extra: str) -> list[str]:
    return ["--framework", framework, "--model", model, "--runtime", runtime, *extra]


def _faults(*faults: str) -> list[str]:
    return [x for f in faults for x in ("--fault", f)]


def fix_args(server: list[str], fault: str) -> list[str]:
    """The server arguments with ``fault`` fixed (and nothing else changed)."""
    if fault == "repeats":  # the load repeats images; the fix is a result cache
        return list(server) + ["--cache"]
    fixed = _without(server, fault)
    if fault == "gc":  # same code (catalog, per-request collect), gc.freeze() after startup
        fixed += ["--gc-freeze"]
    elif fault == "eager":  # the same fp32 weights through ONNX Runtime
        fixed = _set(_set(fixed, "--runtime", "ort"), "--precision", "fp32")
    elif fault == "no-batching":
        fixed += ["--batch"]
    return fixed


def fix_load(load: Load, fault: str) -> Load | None:
    """The fixed variant's load where the fix changes the wire format."""
    if fault == "json":
        return replace(load, payload="raw")
    return None


def _set(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def single(name: str, fault: str, base: list[str], load: Load = Load(), note: str = "") -> Scenario:
    server = base + _faults(fault) if fault != "repeats" else list(base)
    if fault == "json":
        load = replace(load, payload="json")
    if fault == "repeats" and not load.repeats:
        load = replace(load, repeats=0.6)
    return Scenario(name, "single", (RULES[fault],), server, (fix_args(server, fault),), load,
                    (fix_load(load, fault),), fault == "downstream", note)


def pair(name: str, first: str, second: str, base: list[str], load: Load = Load(), note: str = "") -> Scenario:
    """Two faults; ``first`` is the larger. Each fix removes only its own fault."""
    server = base + _faults(*(f for f in (first, second) if f != "repeats"))
    if "json" in (first, second):
        load = replace(load, payload="json")
    if "repeats" in (first, second) and not load.repeats:
        load = replace(load, repeats=0.6)
    return Scenario(name, "pair", (RULES[first], RULES[second]), server,
                    (fix_args(server, first), fix_args(server, second)), load,
                    (fix_load(load, first), fix_load(load, second)), "downstream" in (first, second), note)


def clean(name: str, base: list[str], load: Load = Load(), note: str = "") -> Scenario:
    return Scenario(name, "clean", (), list(base), (), load, (), False, note)


# --------------------------------------------------------------------------- the corpus

HTTP, FLASK, FASTAPI, AIOHTTP, GUNICORN = "httpserver", "flask", "fastapi", "aiohttp", "gunicorn"
SMALL = (320, 240)  # uploads a phone app resized first: inference dominates the request
PHOTO = (640, 480)
CAMERA = (4000, 3000)  # 12-megapixel originals


def _srv(framework: str, model: str, runtime: str = "ort", *extra: str) -> list[str]:
    return _base(framework, model, runtime, *extra)


SCENARIOS: list[Scenario] = [
    # ---- single bottleneck
    single("lock-httpserver-resnet", "lock", _srv(HTTP, "resnet"), Load(8, image_size=SMALL)),
    single("executor1-aiohttp-vit", "executor1", _srv(AIOHTTP, "vit"), Load(8, image_size=SMALL)),
    single("native-threads-fastapi-resnet", "native-threads", _srv(FASTAPI, "resnet"), Load(8, image_size=SMALL)),
    single("native-threads-httpserver-mobilenet-torch", "native-threads", _srv(HTTP, "mobilenet", "torch"),
           Load(8, image_size=SMALL)),
    single("gc-flask-mobilenet", "gc", _srv(FLASK, "mobilenet"), Load(8)),
    single("gc-aiohttp-vit", "gc", _srv(AIOHTTP, "vit"), Load(8)),
    single("logging-fastapi-vit", "logging", _srv(FASTAPI, "vit"), Load(8)),
    single("logging-gunicorn-mobilenet", "logging", _srv(GUNICORN, "mobilenet"), Load(8)),
    single("downstream-flask-resnet", "downstream", _srv(FLASK, "resnet"), Load(4)),
    single("json-fastapi-mobilenet", "json", _srv(FASTAPI, "mobilenet"), Load(8)),
    single("python-preprocess-httpserver-mobilenet", "python-preprocess", _srv(HTTP, "mobilenet"), Load(8)),
    single("big-decode-aiohttp-resnet", "big-decode", _srv(AIOHTTP, "resnet"), Load(4, image_size=CAMERA)),
    single("fp32-gunicorn-vit", "fp32", _srv(GUNICORN, "vit"), Load(8, image_size=SMALL)),
    single("unfused-fastapi2-mobilenet", "unfused", _srv(FASTAPI, "mobilenet", "ort", "--workers", "2"),
           Load(8, image_size=SMALL)),
    single("eager-flask-resnet-torch", "eager", _srv(FLASK, "resnet", "torch"), Load(4, image_size=SMALL)),
    single("reload-aiohttp-mobilenet", "reload", _srv(AIOHTTP, "mobilenet"), Load(4)),
    single("stalls-httpserver-mlp-torch", "stalls", _srv(HTTP, "mlp", "torch"), Load(8)),
    single("no-batching-fastapi-mlp-torch", "no-batching", _srv(FASTAPI, "mlp", "torch"), Load(16, image_size=(224, 224))),
    single("stalls-flask-resnet", "stalls", _srv(FLASK, "resnet"), Load(8)),
    single("gil-postprocess-flask-vit", "gil-postprocess", _srv(FLASK, "vit"), Load(8)),
    single("repeats-fastapi-resnet", "repeats", _srv(FASTAPI, "resnet"), Load(8)),
    # ---- clean: nothing injected
    clean("clean-httpserver-mobilenet", _srv(HTTP, "mobilenet"), Load(8)),
    clean("clean-flask-vit", _srv(FLASK, "vit"), Load(8)),
    clean("clean-fastapi-resnet", _srv(FASTAPI, "resnet"), Load(8)),
    clean("clean-aiohttp-resnet", _srv(AIOHTTP, "resnet"), Load(8, image_size=SMALL)),
    clean("clean-gunicorn-mobilenet", _srv(GUNICORN, "mobilenet"), Load(8)),
    clean("clean-fastapi2-vit", _srv(FASTAPI, "vit", "ort", "--workers", "2"), Load(8)),
    clean("clean-aiohttp-mlp", _srv(AIOHTTP, "mlp"), Load(16, image_size=(224, 224))),
    # ---- two bottlenecks of different sizes, the larger first
    pair("python-preprocess+gil-postprocess-flask-mobilenet", "python-preprocess", "gil-postprocess",
         _srv(FLASK, "mobilenet"), Load(8)),
    pair("reload+logging-httpserver-mobilenet", "reload", "logging", _srv(HTTP, "mobilenet"), Load(8)),
    pair("gc+logging-aiohttp-resnet", "gc", "logging", _srv(AIOHTTP, "resnet"), Load(8)),

    # 3 clients: with more, the 12-megapixel decodes keep both cores busy through the downstream waits
    pair("big-decode+downstream-aiohttp-mobilenet", "big-decode", "downstream", _srv(AIOHTTP, "mobilenet"),
         Load(3, image_size=CAMERA)),
    pair("unfused+repeats-httpserver-resnet", "unfused", "repeats", _srv(HTTP, "resnet"), Load(8, repeats=0.3)),
]


def split(seed: int = 20261207) -> tuple[list[Scenario], list[Scenario]]:
    """(dev, validation): a fixed-seed shuffle stratified by kind, dealt out alternately, so
    each half holds about half of the singles, the clean servers and the pairs. Within a
    kind, scenarios that expect the same rules are dealt one after the other, so a rule with
    two single scenarios has one in each half."""
    rng = random.Random(seed)
    dev: list[Scenario] = []
    validation: list[Scenario] = []
    turn = 0  # carried across kinds and rules, so odd groups' extras go to each half in turn
    for kind in ("single", "clean", "pair"):
        by_rules: dict[tuple[str, ...], list[Scenario]] = {}
        for scenario in sorted((s for s in SCENARIOS if s.kind == kind), key=lambda s: s.name):
            by_rules.setdefault(scenario.expected, []).append(scenario)
        keys = sorted(by_rules)
        rng.shuffle(keys)
        for key in keys:
            group = by_rules[key]
            rng.shuffle(group)
            for scenario in group:
                (dev if turn % 2 == 0 else validation).append(scenario)
                turn += 1
    return dev, validation


def by_name(name: str) -> Scenario:
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(f"no scenario {name!r}")


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


def _kill_group(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL it: workers/children may outlive a leader that
    already exited, so the group goes either way."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if sig == signal.SIGTERM and process.poll() is not None:
            continue
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass


class ScenarioServer:
    """Start ``server.py`` (and the label service when asked) on free ports; wait for
    /health; on exit kill each process group. ``pid`` is the server's (for multi-worker
    servers, the supervisor's: the workers are its children)."""

    def __init__(self, args: list[str], feature_service: bool = False, timeout_s: float = 120.0,
                 python: str | None = None, env: dict[str, str] | None = None, feature_delay_ms: float = 25.0):
        self.args = list(args)
        self.feature_service = feature_service or "downstream" in self.args
        self.timeout_s = timeout_s
        self.python = python or sys.executable
        self.env = env
        self.feature_delay_ms = feature_delay_ms
        self.port: int | None = None
        self.pid: int | None = None
        self.process: subprocess.Popen | None = None
        self.feature_process: subprocess.Popen | None = None
        self.workdir: Path | None = None

    def _spawn(self, argv: list[str], name: str) -> subprocess.Popen:
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(self.workdir / f"{name}.stderr", "wb") as output:
            # a new session: the server, its workers and their threads form one process group
            return subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def stderr_tail(self, name: str = "server", limit: int = 4000) -> str:
        if self.workdir is None:
            return ""
        path = self.workdir / f"{name}.stderr"
        return path.read_bytes()[-limit:].decode(errors="replace") if path.exists() else ""

    def _wait(self, process: subprocess.Popen, port: int, name: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} before answering /health:\n"
                                   f"{self.stderr_tail(name)}")
            if _healthy(port):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer /health within {self.timeout_s:.0f} s:\n{self.stderr_tail(name)}")

    def __enter__(self) -> ScenarioServer:  # noqa: PYI034 (3.10 has no typing.Self)
        self.workdir = Path(tempfile.mkdtemp(prefix="prof-scenario-"))
        try:
            extra: list[str] = []
            if self.feature_service:
                feature_port = free_port()
                self.feature_process = self._spawn(
                    [self.python, str(FEATURE_SERVICE), "--port", str(feature_port),
                     "--delay-ms", str(self.feature_delay_ms)], "feature")
                self._wait(self.feature_process, feature_port, "feature")
                extra += ["--feature-url", f"http://127.0.0.1:{feature_port}"]
            self.port = free_port()
            argv = [self.python, str(SERVER), "--port", str(self.port), *self.args, *extra,
                    "--log-file", str(self.workdir / "server.log")]
            self.process = self._spawn(argv, "server")
            self.pid = self.process.pid
            self._wait(self.process, self.port, "server")
        except BaseException:
            self.close()
            raise
        return self

    def worker_pids(self) -> list[int]:
        """The server's descendants (uvicorn/gunicorn workers; empty for one-process servers)."""
        import psutil

        if self.pid is None:
            return []
        try:
            return [child.pid for child in psutil.Process(self.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def close(self) -> None:
        for process in (self.process, self.feature_process):
            if process is not None:
                _kill_group(process)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __exit__(self, *exc) -> None:
        self.close()
