"""Async HTTP load: closed loop (N clients, each waits for its answer) or open loop
(Poisson arrivals at a rate, independent of answers). Every request is recorded."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from samples.loadgen.workload import ImageMix, PayloadFormat, encode_payload


@dataclass(frozen=True)
class LoadSpec:
    url: str
    concurrency: int = 8
    rate: float | None = None  # requests/s; set = open loop
    duration_s: float | None = 20.0
    requests: int | None = None
    warmup_s: float = 2.0
    payload: PayloadFormat = "raw"
    accept_msgpack: bool = False
    timeout_s: float = 30.0
    max_in_flight: int = 1024
    seed: int = 0

    @property
    def mode(self) -> str:
        return "open" if self.rate else "closed"


@dataclass
class RequestRecord:
    request_id: str
    start_ns: int  # Unix epoch
    latency_ns: int
    status: int  # 0: no HTTP answer (connection error, timeout)
    bytes_sent: int
    bytes_received: int
    sha256: str
    duplicate: bool
    image_size: str
    image_format: str
    warmup: bool
    server_ms: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunState:
    """Shared by the request tasks and the progress display."""

    records: list[RequestRecord] = field(default_factory=list)
    started: float = 0.0
    measure_from: float = 0.0
    dropped: int = 0
    in_flight: int = 0
    done: bool = False

    def measured(self) -> list[RequestRecord]:
        return [r for r in self.records if not r.warmup]


class LoadRunner:
    def __init__(self, spec: LoadSpec, mix: ImageMix, on_record: Callable[[RequestRecord], None] | None = None):
        if spec.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if spec.rate is not None and spec.rate <= 0:
            raise ValueError("rate must be positive")
        if spec.duration_s is None and spec.requests is None:
            raise ValueError("give a duration or a request count")
        self.spec = spec
        self.mix = mix
        self.state = RunState()
        self._ids = itertools.count()
        self._measured = itertools.count()
        self._run_tag = f"lg{random.Random(time.time_ns()).getrandbits(24):06x}"
        self._on_record = on_record

    async def run(self) -> RunState:
        spec = self.spec
        limits = httpx.Limits(max_connections=max(spec.concurrency, 1) if spec.mode == "closed" else spec.max_in_flight,
                              max_keepalive_connections=max(spec.concurrency, 1))
        async with httpx.AsyncClient(timeout=spec.timeout_s, limits=limits) as client:
            self.state.started = time.monotonic()
            self.state.measure_from = self.state.started + spec.warmup_s
            try:
                if spec.mode == "closed":
                    await asyncio.gather(*(self._closed_client(client) for _ in range(spec.concurrency)))
                else:
                    await self._open_loop(client)
            finally:
                self.state.done = True
        return self.state

    def _more(self) -> bool:
        spec, now = self.spec, time.monotonic()
        if spec.duration_s is not None and now >= self.state.measure_from + spec.duration_s:
            return False
        if spec.requests is not None and now >= self.state.measure_from:
            return next(self._measured) < spec.requests
        return True

    async def _closed_client(self, client: httpx.AsyncClient) -> None:
        while self._more():
            await self._one(client)

    async def _open_loop(self, client: httpx.AsyncClient) -> None:
        rng = random.Random(self.spec.seed + 1)
        tasks: set[asyncio.Task] = set()
        next_at = time.monotonic()
        while self._more():
            next_at += rng.expovariate(self.spec.rate or 1.0)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if self.state.in_flight >= self.spec.max_in_flight:
                self.state.dropped += 1
                continue
            task = asyncio.create_task(self._one(client))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient) -> None:
        item = self.mix.next()
        payload = encode_payload(item, self.spec.payload, self.spec.accept_msgpack)
        request_id = f"{self._run_tag}-{next(self._ids)}"
        headers = {**payload.headers, "X-Request-ID": request_id}
        warmup = time.monotonic() < self.state.measure_from
        start_epoch, start = time.time_ns(), time.perf_counter_ns()
        self.state.in_flight += 1
        status, received, error, server_ms = 0, 0, None, {}
        try:
            response = await client.post(self.spec.url, content=payload.body, headers=headers)
            status, received = response.status_code, len(response.content)
            if status == 200 and response.headers.get("content-type", "").startswith("application/json"):
                server_ms = json.loads(response.content).get("timings_ms", {})
        except (httpx.HTTPError, ValueError) as exc:  # transport failure or an unparsable answer
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self.state.in_flight -= 1
        record = RequestRecord(request_id, start_epoch, time.perf_counter_ns() - start, status, len(payload.body),
                               received, item.sha256, item.duplicate, item.size, item.fmt, warmup, server_ms, error)
        self.state.records.append(record)
        if self._on_record is not None:
            self._on_record(record)


def write_records(records: list[RequestRecord], path: Path) -> None:
    """JSON Lines, one request per line; written to a temp file and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        for record in records:
            handle.write(json.dumps(asdict(record), separators=(",", ":")) + "\n")
    tmp.replace(path)
