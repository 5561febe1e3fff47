"""The capture process of the ``http`` probe: ``python -m probes.http.capture --pid P --out DIR``.

It runs beside py-spy as prof's child, not in prof's own process, so parsing packets never
competes for a GIL with the load generator. It watches the ports the target listens on
(rediscovered every few seconds: a port that opens or closes mid-run is followed and noted),
rebuilds HTTP exchanges and appends one JSON line per exchange to ``exchanges.jsonl``
(flushed every half second, so a killed capture keeps all but the last moments). Its
counters — packets, kernel drops, gaps, malformed messages, TLS connections — go to
``capture.json``, rewritten atomically at each port re-read and at the end.

It ends on SIGTERM (or when prof, its parent, is gone); SIGINT is left to prof, which stops
the capture after the other probes so that the last responses are still seen.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from profiler.atomic import atomic_write_text
from probes.http.flow import Exchange, FlowCounters, HttpConnection
from probes.http.netcap import CaptureError, PacketSocket, Segment, TcpStream, decode_segment, listening_ports

EXCHANGES = "exchanges.jsonl"
STATS = "capture.json"
READY = "ready"
_FLUSH_S = 0.5
# psutil's listening-port scan costs ~8-13 ms here (it parses every line of /proc/net/tcp*):
# every 5 s it is a quarter of a percent of one core.
REFRESH_S = 5.0
DRAIN_S = 8.0


@dataclass
class _Flow:
    connection: HttpConnection
    to_server: TcpStream = field(default_factory=TcpStream)
    to_client: TcpStream = field(default_factory=TcpStream)
    closing: int = 0  # FINs seen


@dataclass
class WireCapture:
    """Packets in, exchanges out. ``handle`` takes one decoded segment; the loop is in
    :meth:`run`, the bookkeeping in :meth:`tick` — separate so tests can feed segments."""

    ports: set[int]
    out: IO[str]
    pid: int | None = None
    counters: FlowCounters = field(default_factory=FlowCounters)
    exchanges: int = 0
    connections_seen: int = 0
    port_events: list[dict] = field(default_factory=list)
    listening: set[int] | None = None
    unread_at_stop: bool = False
    _flows: dict[tuple[str, int, str, int], _Flow] = field(default_factory=dict)

    def handle(self, segment: Segment) -> None:
        if segment.dport in self.ports:
            key, to_server = (segment.src, segment.sport, segment.dst, segment.dport), True
        elif segment.sport in self.ports:
            key, to_server = (segment.dst, segment.dport, segment.src, segment.sport), False
        else:
            return
        flow = self._flows.get(key)
        if segment.syn and to_server:
            if flow is not None:  # the 4-tuple is reused: the old connection is over
                self._close(key, "aborted")
            flow = self._flows[key] = self._new_flow(key, from_start=True)
        elif flow is None:
            if not segment.payload:
                return
            flow = self._flows[key] = self._new_flow(key, from_start=False)
        stream = flow.to_server if to_server else flow.to_client
        chunks, gap = stream.push(segment.seq, segment.syn, segment.payload)
        deliver = flow.connection.client_data if to_server else flow.connection.server_data
        for chunk in chunks:
            deliver(chunk, segment.ts_ns, gap)
            gap = False
        if segment.rst:
            self._close(key, "aborted")
        elif segment.fin:
            flow.closing += 1
            if flow.closing >= 2:
                self._close(key, "aborted")

    def _new_flow(self, key: tuple[str, int, str, int], from_start: bool) -> _Flow:
        self.connections_seen += 1
        client = f"{key[0]}:{key[1]}" if ":" not in key[0] else f"[{key[0]}]:{key[1]}"
        return _Flow(HttpConnection(self.connections_seen, client, key[3], self.counters, self._emit, from_start))

    def _emit(self, exchange: Exchange) -> None:
        self.out.write(json.dumps(exchange.record(), separators=(",", ":")) + "\n")
        self.exchanges += 1

    def _close(self, key: tuple[str, int, str, int], outcome: str) -> None:
        flow = self._flows.pop(key, None)
        if flow is not None:
            flow.connection.close(outcome)

    def finish(self) -> None:
        """The capture ends: requests still waiting are written as incomplete."""
        for key in list(self._flows):
            self._close(key, "incomplete")

    def follow_ports(self, now_ns: int) -> bool:
        """Re-read the target's listening ports; True when a new one must join the filter.
        A port that stops listening stays watched: its established connections live on."""
        if self.pid is None:
            return False
        current = listening_ports(self.pid)
        if self.listening is None:
            self.listening = set(self.ports)
        for port in sorted(current - self.listening):
            self.port_events.append({"ts_ns": now_ns, "port": port, "event": "opened"})
        for port in sorted(self.listening - current):
            self.port_events.append({"ts_ns": now_ns, "port": port, "event": "closed"})
        self.listening = current
        added = current - self.ports
        self.ports |= current
        return bool(added)

    def stats(self, packets: int, drops: int) -> dict:
        return {"ports": sorted(self.ports), "packets": packets, "drops": drops, "exchanges": self.exchanges,
                "connections": self.connections_seen, "open_connections": len(self._flows),
                "port_events": self.port_events, "unread_at_stop": self.unread_at_stop,
                "cpu_s": round(time.process_time(), 3), **self.counters.as_dict()}


def run_capture(pid: int | None, ports: set[int], out_dir: Path, receive_buffer: int,
                parent: int | None = None, refresh_s: float = REFRESH_S) -> int:
    """Capture until SIGTERM or until ``parent`` exits; returns the exit code."""
    stop = _stop_flag()
    out_dir.mkdir(parents=True, exist_ok=True)
    sock = PacketSocket(ports, receive_buffer=receive_buffer)
    try:
        sock.open()
    except CaptureError as exc:
        print(f"error: {exc}", flush=True)
        return 2
    with open(out_dir / EXCHANGES, "a", buffering=1 << 16) as out:
        capture = WireCapture(set(ports), out, pid)
        print(READY, flush=True)
        last_flush = last_refresh = time.monotonic()
        try:
            while not stop["stop"]:
                received = sock.receive()
                if received is not None:
                    _handle(capture, received)
                now = time.monotonic()
                if now - last_flush >= _FLUSH_S:
                    out.flush()
                    last_flush = now
                if now - last_refresh >= refresh_s:
                    last_refresh = now
                    if capture.follow_ports(time.time_ns()):
                        sock.set_ports(capture.ports)
                    _write_stats(out_dir, capture.stats(*sock.statistics()))
                    if parent is not None and os.getppid() != parent:
                        break
            capture.unread_at_stop = _drain(sock, capture)
        finally:
            capture.finish()
            out.flush()
            _write_stats(out_dir, capture.stats(*sock.statistics()))
            sock.close()
    return 0


def _handle(capture: WireCapture, received: tuple[int, bytes]) -> None:
    segment = decode_segment(received[1], received[0])
    if segment is not None:
        capture.handle(segment)


def _drain(sock: PacketSocket, capture: WireCapture, limit_s: float = DRAIN_S) -> bool:
    """Parse what the kernel still holds when asked to stop (the capture may run behind a
    burst); True if some was left after ``limit_s``."""
    sock.timeout_s = 0.05
    sock.set_timeout()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        received = sock.receive()
        if received is None:
            return False
        _handle(capture, received)
    return True


def _stop_flag() -> dict[str, bool]:
    flag = {"stop": False}

    def handler(signum: int, frame: object) -> None:
        flag["stop"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # prof decides when the capture ends
    return flag


def _write_stats(out_dir: Path, stats: dict) -> None:
    atomic_write_text(out_dir / STATS, json.dumps(stats, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probes.http.capture",
                                     description="Capture the HTTP exchanges of a process's listening ports.")
    parser.add_argument("--pid", type=int, help="follow this process's listening ports")
    parser.add_argument("--ports", default="", help="comma list of ports to watch from the start")
    parser.add_argument("--out", type=Path, required=True, help="directory for exchanges.jsonl and capture.json")
    parser.add_argument("--receive-buffer", type=int, default=32 << 20, help="socket buffer bytes")
    parser.add_argument("--parent", type=int, help="end when this pid is no longer the parent")
    parser.add_argument("--refresh-s", type=float, default=REFRESH_S,
                        help="seconds between re-reads of the listening ports and of the counters file")
    args = parser.parse_args(argv)
    ports = {int(p) for p in args.ports.split(",") if p.strip()}
    if args.pid is not None:
        ports |= listening_ports(args.pid)
    if not ports:
        print("error: no port to watch", flush=True)
        return 2
    return run_capture(args.pid, ports, args.out, args.receive_buffer, args.parent, args.refresh_s)


if __name__ == "__main__":
    sys.exit(main())
