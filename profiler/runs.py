"""A profiling run, start to end: the target (the sample server, or any command) started, the
probes around it, the load generator driven at it with its records written, and everything
stopped again whatever happens (Ctrl-C, SIGTERM, a target that exits). ``prof run`` parses its
options and calls this; what is left is a session to merge and diagnose."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from rich.console import Console

from profiler import collect
from samples.loadgen.__main__ import _run_with_progress, mix_from_args
from samples.loadgen.runner import LoadRunner, LoadSpec, write_records
from samples.sample_server.config import _OPTIONS, config_from_args
from samples.sample_server.process import ServerProcess, ServerStartError


LOAD_OPTIONS = ("concurrency", "rate", "warmup", "payload", "accept", "image_sizes", "formats", "duplicates", "seed",
                "timeout", "duration")


def load_settings(args: argparse.Namespace) -> dict:
    """The load generator's options of a run, by flag name (``--image-sizes`` -> image_sizes)."""
    return {name: getattr(args, name) for name in LOAD_OPTIONS}


def server_knobs(args: argparse.Namespace) -> tuple[list[str], object]:
    config = config_from_args(args)  # validates knobs and PROF_* env before anything starts
    knobs: list[str] = []
    for flag, *_ in _OPTIONS:
        value = getattr(args, flag.replace("-", "_"), None)
        if value is None or flag in ("spans-dir", "framework-profile-dir", "host", "port"):
            continue
        knobs += [f"--{flag}", ("1" if value else "0") if isinstance(value, bool) else str(value)]
    return knobs, config


def load_mix(args: argparse.Namespace):
    if not 0.0 <= args.duplicates <= 1.0:
        raise ValueError("--duplicates is a fraction between 0 and 1")
    return mix_from_args(args)


class RunError(RuntimeError):
    """The target could not be started or reached; the message says why (one line, or the
    target's last output after it)."""


class _Run:
    def __init__(self, session, args, probes, mix) -> None:
        self.session, self.args, self.probes, self.mix = session, args, probes, mix
        self.collector = None

    def drive_load(self, url: str, console: Console) -> None:
        args = self.args
        spec = LoadSpec(url=url, concurrency=args.concurrency, rate=args.rate, duration_s=args.duration,
                        requests=None, warmup_s=args.warmup, payload=args.payload,
                        accept_msgpack=args.accept == "msgpack", timeout_s=args.timeout, seed=args.seed)
        runner = LoadRunner(spec, self.mix)
        directory = self.session.raw_dir("loadgen")
        (directory / "meta.json").write_text(json.dumps({"pid": os.getpid(), "url": url}))
        self.session.set_probe("loadgen", "on", concurrency=None if args.rate else args.concurrency,
                               rate=args.rate, duplicates=args.duplicates, payload=args.payload)
        self.session.meta["load"] = load_settings(args)  # what prof verify replays
        self.session.save_meta()
        try:
            asyncio.run(_run_with_progress(runner, console, args.quiet))
        finally:
            write_records(runner.state.records, directory / "records.jsonl")  # kept whatever happens
        if time.monotonic() < runner.state.measure_from + args.duration - 0.5:
            raise KeyboardInterrupt  # the load ended early: a signal cancelled it

    def start_collector(self, pid: int, probes: set[str], subprocesses: bool, use_agent: bool,
                        console: Console) -> None:
        self.collector = collect.Collector(self.session, pid, probes, collect.pyspy_options(self.args, subprocesses),
                                           use_agent=use_agent, wire_ports=frozenset(self.args.wire_port))
        self.collector.start()
        states = []
        for name, info in self.session.meta["probes"].items():
            if info.get("status") == "on":
                states.append(f"[green]{name}[/green]" + (f" {info['rate_hz']} Hz" if "rate_hz" in info else ""))
            elif "not chosen" not in (info.get("reason") or ""):
                states.append(f"[dim]{name} off ({info.get('reason')})[/dim]")
        console.print("collecting: " + ", ".join(states))

    def stop_collector(self) -> None:
        if self.collector is not None and self.collector.started:
            self.collector.stop()


class SampleServerRun(_Run):
    def __init__(self, session, args, probes, knobs, config, mix) -> None:
        super().__init__(session, args, probes, mix)
        self.knobs, self.config = knobs, config

    def run(self, console: Console) -> str:
        """Start the server, collect while the load runs, stop everything: the outcome (done,
        interrupted, target-exited). RunError when the server does not start."""
        knobs = list(self.knobs)
        if "stages" in self.probes:
            knobs += ["--spans-dir", str(self.session.raw_dir("stages"))]
        if "framework" in self.probes:
            kind = "ort" if self.config.backend == "ort" else "torch"
            knobs += ["--framework-profile-dir", str(self.session.raw_dir(kind))]
        server = ServerProcess(knobs, log_path=self.session.raw_dir("server") / "server.log")
        undo = collect.raise_on_sigterm()
        outcome = "done"
        try:
            with console.status(f"starting the sample server {' '.join(self.knobs)} (a first run builds the "
                                "model, ~30 s)"):
                try:
                    server.start()
                except ServerStartError as exc:
                    self.session.add_note("the sample server did not start; see raw/server/server.log")
                    raise RunError(f"the sample server did not start:\n{exc}") from None
            self.session.meta["targets"] = [server.pid]
            self.session.meta["server"] = {"knobs": self.knobs, "url": server.url, "pid": server.pid}
            self.session.save_meta()
            for probe, on in (("stages", "stages" in self.probes), ("framework", "framework" in self.probes)):
                self.session.set_probe(probe, "on" if on else "off", None if on else "not chosen (--probes)",
                                       via="server knob")
            console.print(f"sample server pid {server.pid} at {server.url} · session {self.session.path}")
            workers = getattr(self.config, "workers", 1)
            self.start_collector(server.pid, self.probes - {"stages", "framework"}, workers > 1, use_agent=False,
                                 console=console)
            self.drive_load(f"{server.url}/classify", console)
            if not self.collector.target_alive():
                outcome = "target-exited"
        except KeyboardInterrupt:
            outcome = "interrupted"
        finally:
            self.stop_collector()
            server.stop()  # SIGTERM: the server flushes its spans and framework profile
            undo()
        return outcome


class CommandRun(_Run):
    def __init__(self, session, args, probes, command, mix) -> None:
        super().__init__(session, args, probes, mix)
        self.command = command

    def run(self, console: Console) -> str:
        """Start the command, collect (driving load at ``--url`` if given), stop everything: the
        outcome. RunError when the command cannot start or never listens."""
        log_path = self.session.raw_dir("command") / "output.log"
        undo = collect.raise_on_sigterm()
        outcome = "done"
        process = None
        try:
            with open(log_path, "ab") as log:
                try:
                    process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
                except OSError as exc:
                    raise RunError(f"cannot start {self.command[0]}: {exc.strerror}") from None
            self.session.meta["targets"] = [process.pid]
            self.session.save_meta()
            console.print(f"started pid {process.pid}: {' '.join(self.command)} (output: {log_path})")
            try:
                if "pyspy" in self.probes:
                    collect.wait_until_python(process.pid, timeout_s=30.0)
                if self.args.url:
                    _wait_listening(self.args.url, process, timeout_s=120.0)
            except collect.CollectError as exc:
                raise RunError(f"{exc}\n{_tail(log_path)}") from None
            self.start_collector(process.pid, self.probes, subprocesses=True, use_agent=True, console=console)
            if self.args.url:
                self.drive_load(self.args.url, console)
                if not self.collector.target_alive():
                    outcome = "target-exited"
            else:
                with console.status(f"collecting for {self.args.duration:g} s (Ctrl-C ends early)"):
                    outcome = collect.wait_window(self.collector, self.args.duration)
        except KeyboardInterrupt:
            outcome = "interrupted"
        finally:
            self.stop_collector()
            if process is not None:
                _end_group(process)
            undo()
        return outcome


def _wait_listening(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http",) or not parsed.hostname:
        raise collect.CollectError(f"--url {url}: give an http:// URL")
    port = parsed.port or 80
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise collect.CollectError(f"the command exited with code {process.returncode} before listening on {port}")
        try:
            socket.create_connection((parsed.hostname, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise collect.CollectError(f"nothing listens at {parsed.hostname}:{port} after {timeout_s:.0f} s")


def _end_group(process: subprocess.Popen) -> None:
    """SIGINT, then SIGTERM, then SIGKILL to the command's whole process group."""
    for sig, wait_s in ((signal.SIGINT, 5.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived the leader
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
