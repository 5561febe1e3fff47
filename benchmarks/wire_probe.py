"""The http probe's cost and its capture rate limit, measured side by side.

Cost: one sample server under the same closed-loop load; short windows alternate
probe-off / probe-on (capture process running), many pairs, and each pair gives a ratio.
Because a 1 % effect is far below this box's run-to-run noise (±8 % between windows), the
capture process's own CPU time is measured too: its share of the machine is a direct,
low-noise bound on what it can take from the server.

Rate limit: a minimal asyncio HTTP server and pipelining clients push requests as fast as
this machine allows; the table compares what the clients completed with what the wire saw
(and the kernel's drop count), for small GETs and for 50 kB POSTs.

    .venv/bin/python benchmarks/wire_probe.py [--pairs 12] [--seconds 5] [--rate-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from overhead import throughput  # noqa: E402
from probes.http.probe import WireProbe  # noqa: E402
from samples.sample_server.process import ServerProcess, free_port  # noqa: E402

FAST_SERVER = """
import asyncio, sys
RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: 11\\r\\n\\r\\n{\\"ok\\":true}"
class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        answers = 0
        while True:
            head = self.buffer.find(b"\\r\\n\\r\\n")
            if head < 0:
                break
            length = 0
            for line in self.buffer[:head].split(b"\\r\\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(self.buffer) < head + 4 + length:
                break
            self.buffer = self.buffer[head + 4 + length:]
            answers += 1
        if answers:
            self.transport.write(RESPONSE * answers)
async def main():
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def cost(args: argparse.Namespace, scratch: Path) -> None:
    ratios, off_rates, on_rates, cpu_shares = [], [], [], []
    with ServerProcess(["--backend", "ort", "--intra-op-threads", "1"]) as server:
        throughput(server.url, 3.0, args.concurrency)  # warm-up
        for pair in range(args.pairs):
            order = ("off", "on") if pair % 2 == 0 else ("on", "off")
            result = {}
            for mode in order:
                probe = None
                if mode == "on":
                    probe = WireProbe(server.pid, Path(tempfile.mkdtemp(dir=scratch)))
                    probe.start()
                    wall_before = time.monotonic()
                try:
                    result[mode] = throughput(server.url, args.seconds, args.concurrency)
                finally:
                    if probe is not None:
                        stats = probe.stop()  # its CPU time includes start-up: an upper bound
                        cpu_shares.append(stats.get("cpu_s", 0.0) / (time.monotonic() - wall_before))
            off_rates.append(result["off"])
            on_rates.append(result["on"])
            ratios.append(result["on"] / result["off"])
            print(f"  pair {pair + 1}: off {result['off']:.1f}, on {result['on']:.1f} req/s, ratio "
                  f"{ratios[-1]:.3f}, capture CPU {cpu_shares[-1]:.2%} of a core, {stats.get('exchanges')} exchanges, "
                  f"drops {stats.get('drops')}", file=sys.stderr)
    ratios.sort()
    print(f"\nsample server (ORT, 1 intra-op thread), closed loop {args.concurrency} clients, {args.seconds:g} s "
          f"windows, {args.pairs} pairs alternating order\n")
    print("| probe | req/s median [min..max] | ratio on/off median [min..max] | capture CPU, share of one core |")
    print("|---|---|---|---|")
    print(f"| off | {statistics.median(off_rates):.1f} [{min(off_rates):.1f}..{max(off_rates):.1f}] | 1.000 | |")
    print(f"| http (wire capture) | {statistics.median(on_rates):.1f} [{min(on_rates):.1f}..{max(on_rates):.1f}] | "
          f"{statistics.median(ratios):.3f} [{ratios[0]:.3f}..{ratios[-1]:.3f}] | "
          f"{statistics.median(cpu_shares):.2%} [{min(cpu_shares):.2%}..{max(cpu_shares):.2%}] |")
    print(f"\nmachine: {os.cpu_count()} cores: the capture's CPU share of the whole machine is "
          f"{statistics.median(cpu_shares) / (os.cpu_count() or 1):.2%}")


async def hammer(port: int, seconds: float, connections: int, depth: int, body: bytes) -> int:
    """Pipelining clients: each writes ``depth`` requests, reads ``depth`` answers, repeats."""
    head = (f"POST /x HTTP/1.1\r\nHost: b\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body if body else
            b"GET /x HTTP/1.1\r\nHost: b\r\n\r\n")
    deadline = time.monotonic() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = len(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n") + 11
        while time.monotonic() < deadline:
            writer.write(head * depth)
            await reader.readexactly(answer * depth)
            done += depth
        writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return done


def rate_limit(args: argparse.Namespace, scratch: Path) -> None:
    print("\ncapture rate limit: minimal asyncio server, pipelining clients (4 connections), "
          f"{args.rate_seconds:g} s per row\n")
    print("| requests | pipeline depth | client req/s | seen / sent | kernel drops | capture parsed req/s "
          "(until drained) | capture CPU |")
    print("|---|---|---|---|---|---|---|")
    for label, body in (("GET, no body", b""), ("POST, 50 kB body", os.urandom(50_000))):
        for depth in (1, 8):
            port = free_port()
            server = subprocess.Popen([sys.executable, "-c", FAST_SERVER, str(port)])
            time.sleep(0.8)
            probe = WireProbe(server.pid, Path(tempfile.mkdtemp(dir=scratch)))
            probe.start()
            try:
                started = time.monotonic()
                sent = asyncio.run(hammer(port, args.rate_seconds, 4, depth, body))
                elapsed = time.monotonic() - started
            finally:
                server.kill()
                server.wait()
                stats = probe.stop()  # the capture parses what its buffer still holds, then ends
                cpu_and_drain = time.monotonic() - started
                cpu = stats.get("cpu_s", 0.0)
            seen = sum(1 for line in (probe.out_dir / "exchanges.jsonl").read_text().splitlines()
                       if json.loads(line)["status"] == 200)
            print(f"| {label} | {depth} | {sent / elapsed:,.0f} | {seen / max(sent, 1):.3f} | {stats.get('drops', 0):,} | "
                  f"{seen / cpu_and_drain:,.0f} | {cpu / cpu_and_drain:.0%} of a core |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rate-seconds", type=float, default=5.0)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-rate", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if not args.skip_cost:
            cost(args, Path(scratch))
        if not args.skip_rate:
            rate_limit(args, Path(scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
