"""Collection: the out-of-process probes (py-spy, psutil, NVML, the wire) and the agent window around a
target pid, started together and always stopped together, each probe's state in meta.

Used by ``prof run`` and ``prof attach``. Whatever happens (the target exits, Ctrl-C, a
probe fails), :meth:`Collector.stop` ends every child it started and keeps what was written.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil

from probes import agent as agent_probe
from probes import pyspy
from probes.protocol import Probe, ProbeUnavailable, Target
from probes.registry import DEFAULT_PROBES, PROBE_SPECS, PROBES
from profiler.session import Session, build_timeline

DEFAULT_PYSPY_RATE = 20


class CollectError(RuntimeError):
    """The collection cannot start; the message is one line with the reason and the remedy."""


def pyspy_options(args: Any, subprocesses: bool) -> pyspy.PySpyOptions:
    """py-spy's options from the collection options of ``prof run``/``prof attach``
    (``pyspy_rate``, ``gil``, ``native``, ``blocking``, ``gil_snapshots``, ``gc_watch``); ValueError on a bad one."""
    rate = args.pyspy_rate or DEFAULT_PYSPY_RATE
    if rate <= 0 or rate > 10_000:
        raise ValueError(f"--pyspy-rate {rate}: choose 1..10000 samples per second")
    if not 0 <= args.gil_snapshots <= 20:
        raise ValueError(f"--gil-snapshots {args.gil_snapshots:g}: choose 0..20 per second")
    gc_hz = int(getattr(args, "gc_watch", 0) or 0)
    if not 0 <= gc_hz <= 50:
        raise ValueError(f"--gc-watch {gc_hz}: choose 0 (off) .. 50 native samples per second")
    return pyspy.PySpyOptions(rate=rate, gil=args.gil, native=args.native, subprocesses=subprocesses,
                              nonblocking=not args.blocking, snapshot_hz=args.gil_snapshots, gc_watch_hz=gc_hz)


def finish_collection(session: Session, outcome: str) -> None:
    """Record how the collection ended and merge what it left into the session's timeline."""
    if outcome == "target-exited":
        session.add_note("the target exited during collection; the session holds what was collected until then")
    elif outcome == "interrupted":
        session.add_note("collection interrupted (Ctrl-C or SIGTERM); the session holds what was collected")
    session.meta["outcome"] = outcome
    session.save_meta()
    build_timeline(session)


def parse_probes(text: str | None) -> set[str]:
    """``default``, ``all``, ``none``, or a comma list (``-name`` removes from the default set)."""
    if text is None or text == "default":
        return set(DEFAULT_PROBES)
    if text == "all":
        return set(PROBES)
    if text == "none":
        return set()
    items = [t.strip() for t in text.split(",") if t.strip()]
    chosen = set(DEFAULT_PROBES) if all(t.startswith("-") for t in items) else set()
    for item in items:
        name = item.lstrip("+-")
        if name not in PROBES:
            raise ValueError(f"unknown probe {name!r}: choose from {', '.join(PROBES)} (or default, all, none)")
        if item.startswith("-"):
            chosen.discard(name)
        else:
            chosen.add(name)
    return chosen


def check_target(pid: int) -> psutil.Process:
    """The target process, or CollectError: no such pid, or a zombie."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            raise CollectError(f"pid {pid} has exited (zombie)")
        return process
    except psutil.NoSuchProcess:
        raise CollectError(f"pid {pid} does not exist") from None
    except psutil.AccessDenied:
        raise CollectError(f"pid {pid}: access denied reading its process information (run as its user or "
                           "root)") from None


def alive(pid: int) -> bool:
    """The process still runs (not gone, not a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_until_python(pid: int, timeout_s: float) -> None:
    """py-spy can read ``pid`` (a freshly spawned interpreter needs a moment), or CollectError."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pyspy.dump_threads(pid, timeout_s=max(5.0, timeout_s))
            return
        except pyspy.PySpyError as exc:
            message = str(exc)
            if "ptrace denied" in message or "does not exist" in message or time.monotonic() >= deadline:
                raise CollectError(message) from None
        time.sleep(0.2)


@dataclass
class Collector:
    session: Session
    pid: int
    probes: set[str]
    pyspy_options: pyspy.PySpyOptions = field(default_factory=lambda: pyspy.PySpyOptions(rate=DEFAULT_PYSPY_RATE))
    interval_s: float = 0.1
    use_agent: bool = True
    on_status: Callable[[str, str, str | None], None] = lambda probe, status, reason: None
    wire_ports: frozenset[int] = frozenset()
    _running: list[tuple[str, Probe, dict[str, Any]]] = field(default_factory=list)
    _agents: list[agent_probe.AgentClient] = field(default_factory=list)
    started: bool = False

    def _status(self, probe: str, status: str, reason: str | None = None, **details: Any) -> None:
        self.session.set_probe(probe, status, reason, **details)
        self.on_status(probe, status, reason)

    def start(self) -> None:
        """Start every chosen probe of the registry that runs outside the target, in the
        registry's order; one that cannot run is marked off with its reason. Then the agent
        windows for the probes that run inside it."""
        self.started = True
        self.session.anchor_clock()
        target = Target(self.pid, self.session.raw_dir, tuple(c.pid for c in _children(self.pid)), self.interval_s,
                        self.pyspy_options, self.wire_ports)
        for spec in PROBE_SPECS:
            if spec.start is None:
                continue
            if spec.name not in self.probes:
                self._status(spec.name, "off", "not chosen (--probes)")
                continue
            probe = spec.start(target)
            try:
                details = probe.start()
            except ProbeUnavailable as exc:
                self._status(spec.name, "off", str(exc))
                continue
            self._running.append((spec.name, probe, details))
            self._status(spec.name, "on", **details)
        if self.use_agent:
            self._open_agent_windows()

    def _open_agent_windows(self) -> None:
        wanted = sorted(self.probes & {"stages", "framework"})
        if not wanted:
            return
        reached = []
        for pid in [self.pid, *(c.pid for c in _children(self.pid))]:
            client = agent_probe.find_agent(pid)
            if client is None:
                continue
            try:
                started = client.request("start", out_dir=str(self.session.path / "raw"), probes=wanted)["started"]
                reached.append((pid, started))
                self._agents.append(client)
            except agent_probe.AgentError as exc:
                self.session.add_note(f"agent of pid {pid}: {exc}")
                client.close()
        for probe in wanted:
            pids = [pid for pid, started in reached if probe in started]
            if pids:
                self._status(probe, "on", via="agent", pids=pids)
            elif probe not in self.session.meta["probes"]:
                self._status(probe, "off", "no prof agent in the target (import probes.agent; "
                             "probes.agent.install()) " if not reached else "the agent could not switch it on")

    def target_alive(self) -> bool:
        try:
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def stop(self) -> list[str]:
        """Stop everything started (agent windows first, while the target still runs), keep
        what was written; returns problems met on the way, also noted in the session."""
        problems: list[str] = []
        for client in self._agents:
            try:
                files = client.request("stop")["files"]
                self.session.add_note(f"agent of pid {client.pid}: {len(files)} files written")
            except agent_probe.AgentError as exc:
                problems.append(str(exc))
            finally:
                client.close()
        self._agents.clear()
        for name, probe, details in self._running:
            try:
                more, met = probe.stop()
            except Exception as exc:  # one probe's failure to stop must not leave the others running
                more, met = {}, [f"{name}: could not stop cleanly ({type(exc).__name__}: {exc})"]
            if more:
                self.session.set_probe(name, "on", **{**details, **more})
            problems.extend(met)
        self._running.clear()
        self.session.anchor_clock()
        for problem in problems:
            self.session.add_note(problem)
        return problems


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def raise_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM end the run exactly as Ctrl-C does (so every ``finally`` runs, and an
    asyncio loop cancels its tasks cleanly); returns the undo."""
    def handler(signum: int, frame: object) -> None:
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def wait_window(collector: Collector, duration_s: float, tick: Callable[[float], None] | None = None) -> str:
    """Sleep through the window; 'done', or 'target-exited' as soon as the target is gone."""
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < duration_s:
        if not collector.target_alive():
            return "target-exited"
        if tick is not None:
            tick(elapsed)
        time.sleep(min(0.25, duration_s - elapsed))
    return "done"


def default_out(kind: str) -> Path:
    return Path("prof-out") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
