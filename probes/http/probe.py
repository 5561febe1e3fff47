"""The ``http`` probe: every request a server answers, seen passively on the wire.

:class:`WireProbe` starts the capture process (``probes.http.capture``) on the ports the
target listens on and stops it; :func:`ingest_wire` turns its ``exchanges.jsonl`` into one
``http`` span per request: start = first request byte, end = last response byte, with the
request id (the client's ``X-Request-ID`` when it sent one, so wire spans join the load
generator's and the server's own spans), and in ``args`` the method, path, content types,
status, request/response body bytes, time to first response byte and the body's SHA-256.

The capture needs CAP_NET_RAW; without it the probe is off with that reason and the other
probes go on. TLS connections are counted and skipped: their content is out of reach.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from probes.http.netcap import capture_permission_problem, listening_ports
from probes.http.capture import EXCHANGES, READY, STATS
from probes.protocol import ProbeUnavailable, Target
from profiler.timeline import make_events

SOURCE = "http"
LOG = "capture.log"
META = "meta.json"
_ARGS = ("method", "path", "query", "content_type", "response_content_type", "status", "request_bytes",
         "response_bytes", "body_sha256", "chunked", "outcome", "client", "port", "conn", "id_from_header", "image")


class WireError(RuntimeError):
    """The wire probe cannot run; the message is one line with the reason."""


@dataclass
class WireProbe:
    """The capture process for ``pid``'s listening ports (plus ``ports``), writing to ``out_dir``."""

    pid: int | None
    out_dir: Path
    ports: frozenset[int] = frozenset()
    start_timeout_s: float = 10.0
    receive_buffer: int | None = None  # bytes of kernel buffer; the capture's default if None
    refresh_s: float | None = None  # seconds between port re-reads; the capture's default if None
    process: subprocess.Popen | None = None
    watched: tuple[int, ...] = ()

    def start(self) -> None:
        problem = capture_permission_problem()
        if problem is not None:
            raise WireError(problem)
        ports = set(self.ports) | (listening_ports(self.pid) if self.pid is not None else set())
        if not ports:
            raise WireError(f"pid {self.pid} listens on no TCP port")
        self.watched = tuple(sorted(ports))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / META).write_text(json.dumps({"pid": self.pid, "ports": self.watched}))
        command = [sys.executable, "-m", "probes.http.capture", "--out", str(self.out_dir.resolve()),
                   "--ports", ",".join(map(str, self.watched)), "--parent", str(os.getpid())]
        if self.pid is not None:
            command += ["--pid", str(self.pid)]
        if self.receive_buffer is not None:
            command += ["--receive-buffer", str(self.receive_buffer)]
        if self.refresh_s is not None:
            command += ["--refresh-s", str(self.refresh_s)]
        log = open(self.out_dir / LOG, "ab")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        line = _read_line(self.process, self.start_timeout_s)
        if line != READY:
            self.stop()
            raise WireError(line.removeprefix("error: ") if line else "the capture process did not start "
                            f"(see {self.out_dir / LOG})")

    def stop(self, timeout_s: float = 20.0) -> dict:
        """End the capture (it writes what it holds) and return its counters."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        return read_stats(self.out_dir)


def _read_line(process: subprocess.Popen, timeout_s: float) -> str:
    """The capture's first line of output, or '' if it says nothing in time."""
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return ""
    return process.stdout.readline().decode(errors="replace").strip()


def read_stats(directory: Path) -> dict:
    try:
        return json.loads((directory / STATS).read_text())
    except (OSError, ValueError):
        return {}


def problems_of(stats: dict) -> list[str]:
    """One line per thing the capture could not see, for the session's notes."""
    notes = []
    if stats.get("drops"):
        notes.append(f"the kernel dropped {stats['drops']:,} of {stats['packets'] + stats['drops']:,} packets "
                     "(capture buffer overrun): some exchanges are missing")
    if stats.get("unread_at_stop"):
        notes.append("the capture ran behind the traffic and stopped with packets still unread: the last "
                     "exchanges are missing")
    if stats.get("gaps"):
        notes.append(f"{stats['gaps']} gaps in TCP streams (lost segments): the affected messages were skipped")
    if stats.get("tls_connections"):
        notes.append(f"{stats['tls_connections']} TLS connections: encrypted, out of reach of the wire probe")
    if stats.get("http2_connections"):
        notes.append(f"{stats['http2_connections']} HTTP/2 connections: not parsed (HTTP/1.1 only)")
    malformed = stats.get("malformed_requests", 0) + stats.get("malformed_responses", 0)
    if malformed:
        notes.append(f"{malformed} malformed HTTP messages (recorded with outcome 'malformed' where a request "
                     "began)")
    for event in stats.get("port_events", []):
        notes.append(f"port {event['port']} {event['event']} during the capture")
    return notes


def ingest_wire(directory: Path) -> pd.DataFrame:
    """``exchanges.jsonl`` -> ``http`` spans on the target's pid (a line cut off by an
    interruption ends the file)."""
    pid = -1
    try:
        pid = int(json.loads((directory / META).read_text()).get("pid") or -1)
    except (OSError, ValueError):
        pass
    rows = []
    path = directory / EXCHANGES
    if path.is_file():
        with open(path, "rb") as handle:
            for line in handle:
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    break
    starts = np.asarray([r["start_ns"] for r in rows], dtype=np.int64)
    ends = np.asarray([r["end_ns"] or r["request_end_ns"] or r["start_ns"] for r in rows], dtype=np.int64)
    names = [f"{r['method'] or '?'} {r['path'] or '?'}" for r in rows]
    args = [orjson.dumps({**{k: r.get(k) for k in _ARGS}, **_times(r)}).decode() for r in rows]
    return make_events(ts_ns=starts, source=SOURCE, kind="span", name=names, dur_ns=np.maximum(ends - starts, 0),
                       pid=pid, tid=-1, request_id=[r["request_id"] for r in rows], args=args)


def _times(record: dict) -> dict:
    """Relative times (ns) kept in args: request fully received, first response byte."""
    start = record["start_ns"]
    out = {}
    if record.get("request_end_ns") is not None:
        out["request_ns"] = record["request_end_ns"] - start
    if record.get("response_start_ns") is not None:
        out["ttfb_ns"] = record["response_start_ns"] - start
    return out


@dataclass
class HttpProbe:
    """The ``http`` probe (:class:`probes.protocol.Probe`): the capture process on the target's
    listening ports (and any extra ``wire_ports``)."""

    capture: WireProbe

    @classmethod
    def for_target(cls, target: Target) -> HttpProbe:
        return cls(WireProbe(target.pid, target.raw_dir("http"), target.wire_ports))

    def start(self) -> dict:
        try:
            self.capture.start()
        except WireError as exc:
            raise ProbeUnavailable(str(exc)) from None
        return {"ports": list(self.capture.watched)}

    def stop(self) -> tuple[dict, list[str]]:
        stats = self.capture.stop()
        return {k: stats[k] for k in ("exchanges", "connections", "packets", "drops") if k in stats}, []
