"""Closed-loop load for the scenario servers: N client threads, each with one keep-alive
HTTP/1.1 connection, sending the next request as soon as the previous answer arrives.

Every body is distinct by default: a few generated JPEGs per image size, made byte-unique
per request by a JPEG comment segment (``samples.images.make_unique``: no re-encode, so
the client stays light). With ``repeats=r`` a fraction r of requests re-send one of a
small set of exact bodies instead (what a result cache can exploit).

    from benchmarks.scenarios.load import run_load
    run_load(port, clients=8, seconds=10, warmup=2)  # -> {"rps", "p50_ms", "p95_ms", "count", "errors"}

    .venv/bin/python benchmarks/scenarios/load.py --port P [--clients 8] [--seconds 10] [--payload json]
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.client
import itertools
import json
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from samples import images

PAYLOADS = ("raw", "json")
BASE_IMAGES = 6  # distinct generated pictures per size
REPEATED_BODIES = 8  # the small set that repeated requests draw from


@functools.lru_cache(maxsize=16)
def base_images(width: int, height: int, seed: int = 0, count: int = BASE_IMAGES) -> tuple[bytes, ...]:
    """Distinct generated JPEGs of one size (memoised: big ones take a second each)."""
    return tuple(images.synthetic_encoded(seed * 1000 + i, width, height, "jpeg") for i in range(count))


class Bodies:
    """Request bodies: unique by default, a fraction ``repeats`` exact repeats."""

    def __init__(self, payload: str, image_size: tuple[int, int], repeats: float, seed: int):
        if payload not in PAYLOADS:
            raise ValueError(f"payload must be one of {PAYLOADS}")
        if not 0.0 <= repeats <= 1.0:
            raise ValueError("repeats is a fraction in [0, 1]")
        self.payload, self.repeats = payload, repeats
        self.bases = base_images(image_size[0], image_size[1], seed)
        self.rng = random.Random(seed)
        self.tags = itertools.count(seed * 10_000_000 + 1)
        self.lock = threading.Lock()
        self.repeated = [self._wrap(images.make_unique(self.bases[i % len(self.bases)], "jpeg", -1 - i), f"r{i}")
                         for i in range(REPEATED_BODIES)]

    def _wrap(self, jpeg: bytes, request_id: str) -> bytes:
        if self.payload == "raw":
            return jpeg
        return json.dumps({"image": base64.b64encode(jpeg).decode("ascii"), "request_id": request_id}).encode()

    def next(self) -> tuple[bytes, str]:
        with self.lock:
            roll = self.rng.random()
            pick = self.rng.randrange(REPEATED_BODIES if roll < self.repeats else len(self.bases))
            tag = next(self.tags)
        content_type = "image/jpeg" if self.payload == "raw" else "application/json"
        if roll < self.repeats:
            return self.repeated[pick], content_type
        return self._wrap(images.make_unique(self.bases[pick], "jpeg", tag), f"u{tag}"), content_type


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def run_load(port: int, clients: int = 8, seconds: float = 10.0, warmup: float = 2.0, payload: str = "raw",
             image_size: tuple[int, int] = (640, 480), repeats: float = 0.0, seed: int = 0,
             host: str = "127.0.0.1", path: str = "/classify", timeout: float = 60.0) -> dict:
    """Drive ``clients`` closed-loop clients for ``warmup`` + ``seconds``; measure the last part.

    Returns rps (answers completed in the measured window per second), p50_ms / p95_ms of
    those answers, count, and errors (non-200 answers and failed requests, whole run).
    """
    bodies = Bodies(payload, tuple(image_size), repeats, seed)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    first_error: list[str] = []

    def client(index: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        mine = latencies[index]
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                break
            body, content_type = bodies.next()
            sent = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
                if not ok and not first_error:
                    first_error.append(f"HTTP {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                ok = False
                if not first_error:
                    first_error.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
                time.sleep(0.05)
            done = time.perf_counter()
            if not ok:
                errors[index] += 1
            elif measure_from <= done <= stop_at:
                mine.append((done - sent) * 1000.0)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True, name=f"load-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + warmup + timeout + 5)
    merged = sorted(itertools.chain.from_iterable(latencies))
    result = {
        "rps": len(merged) / seconds,
        "p50_ms": _percentile(merged, 0.50),
        "p95_ms": _percentile(merged, 0.95),
        "count": len(merged),
        "errors": sum(errors),
    }
    if first_error:
        result["first_error"] = first_error[0]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--payload", choices=PAYLOADS, default="raw")
    parser.add_argument("--image-size", type=images.parse_size, default=(640, 480))
    parser.add_argument("--repeats", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run_load(args.port, args.clients, args.seconds, args.warmup, args.payload, args.image_size,
                      args.repeats, args.seed)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
