"""Running the engine for requests: one at a time, or in dynamic batches.

Both runners hand work to a single inference thread (so inference never competes with
itself for the cores) and record, per batch, the h2d / inference / d2h spans; each request
gets a queue span from its arrival at the runner to the start of its batch. A batch of one
is still a batch, so spans always join requests to the inference that served them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from probes.stages import SpanSink, Stage
from samples.model.engines import Engine

log = logging.getLogger("samples.sample_server.inference")


@dataclass(frozen=True)
class BatchResult:
    logits: np.ndarray
    batch_id: int
    batch_size: int
    queued_ns: tuple[int, int]
    stage_ns: dict[Stage, tuple[int, int]]


@dataclass
class _Pending:
    array: np.ndarray
    enqueued_ns: int
    future: asyncio.Future


class _BatchExecutor:
    def __init__(self, engine: Engine, spans: SpanSink, on_batch, reload: Callable[[], Engine] | None = None) -> None:
        self.engine = engine
        self.spans = spans
        self.on_batch = on_batch
        self.reload = reload
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._batch_ids = itertools.count()

    def run(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, int, dict[Stage, tuple[int, int]]]:
        batch_id = next(self._batch_ids)
        if self.reload is not None:  # the deliberate model-reload bottleneck (--reload-per-request)
            start = time.perf_counter_ns()
            self.engine = self.reload()
            self.spans.record(Stage.MODEL_LOAD, start, time.perf_counter_ns(), None, batch_id)
        t0 = time.perf_counter_ns()
        staged = self.engine.stage_input(np.stack(arrays) if len(arrays) > 1 else arrays[0][None])
        t1 = time.perf_counter_ns()
        output = self.engine.infer(staged)
        t2 = time.perf_counter_ns()
        logits = self.engine.fetch_output(output)
        t3 = time.perf_counter_ns()
        stages = {Stage.H2D: (t0, t1), Stage.INFERENCE: (t1, t2), Stage.D2H: (t2, t3)}
        for stage, (start, end) in stages.items():
            self.spans.record(stage, start, end, None, batch_id)
        self.on_batch(len(arrays))
        return logits, batch_id, stages

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    async def on_inference_thread(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    def call_on_inference_thread(self, fn, timeout_s: float = 120.0):
        """The same from a thread outside the event loop (the agent's), blocking."""
        return self.pool.submit(fn).result(timeout_s)


class DirectRunner:
    """Batching off: each request is its own batch, run in arrival order."""

    def __init__(self, engine: Engine, spans: SpanSink, on_batch=lambda n: None,
                 reload: Callable[[], Engine] | None = None) -> None:
        self._exec = _BatchExecutor(engine, spans, on_batch, reload)

    async def start(self) -> None:
        return None

    async def submit(self, array: np.ndarray) -> BatchResult:
        enqueued = time.perf_counter_ns()
        loop = asyncio.get_running_loop()
        logits, batch_id, stages = await loop.run_in_executor(self._exec.pool, self._exec.run, [array])
        return BatchResult(logits[0], batch_id, 1, (enqueued, stages[Stage.H2D][0]), stages)

    async def on_inference_thread(self, fn):
        return await self._exec.on_inference_thread(fn)

    def call_on_inference_thread(self, fn, timeout_s: float = 120.0):
        return self._exec.call_on_inference_thread(fn, timeout_s)

    async def stop(self) -> None:
        self._exec.shutdown()


class DynamicBatcher:
    """Collects requests until ``max_batch`` are waiting or the oldest has waited
    ``max_wait_ms``, runs them as one batch and scatters the rows back in order."""

    def __init__(self, engine: Engine, spans: SpanSink, max_batch: int, max_wait_ms: float,
                 on_batch=lambda n: None, reload: Callable[[], Engine] | None = None) -> None:
        self._exec = _BatchExecutor(engine, spans, on_batch, reload)
        self.max_batch = max_batch
        self.max_wait_ns = int(max_wait_ms * 1e6)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._in_flight: list[_Pending] = []

    async def start(self) -> None:
        self._task = asyncio.create_task(self._collect_forever(), name="dynamic-batcher")

    async def submit(self, array: np.ndarray) -> BatchResult:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(array, time.perf_counter_ns(), future))
        return await future

    async def _collect_forever(self) -> None:
        while True:
            batch = await self._next_batch()
            self._in_flight = batch
            try:
                await self._run_and_scatter(batch)
            except Exception as exc:  # every request of a failed batch gets the error; the batcher goes on
                log.exception("batch of %d failed", len(batch))
                _fail(batch, exc)
            finally:
                self._in_flight = []

    async def _run_and_scatter(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        logits, batch_id, stages = await loop.run_in_executor(self._exec.pool, self._exec.run,
                                                              [p.array for p in batch])
        started = stages[Stage.H2D][0]
        for row, pending in enumerate(batch):
            if not pending.future.done():
                result = BatchResult(logits[row], batch_id, len(batch), (pending.enqueued_ns, started), stages)
                pending.future.set_result(result)

    async def _next_batch(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        deadline = batch[0].enqueued_ns + self.max_wait_ns
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = (deadline - time.perf_counter_ns()) / 1e9
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def on_inference_thread(self, fn):
        return await self._exec.on_inference_thread(fn)

    def call_on_inference_thread(self, fn, timeout_s: float = 120.0):
        return self._exec.call_on_inference_thread(fn, timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        shutting_down = RuntimeError("server shutting down")
        _fail(self._in_flight, shutting_down)
        while not self._queue.empty():
            _fail([self._queue.get_nowait()], shutting_down)
        self._exec.shutdown()


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)


def postprocess(logits: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """Softmax and the top ``k`` classes, best first."""
    shifted = logits - logits.max()
    probs = np.exp(shifted)
    probs /= probs.sum()
    k = min(k, len(probs))
    top = np.argpartition(-probs, k - 1)[:k]
    top = top[np.argsort(-probs[top], kind="stable")]
    return top.tolist(), probs[top].astype(float).tolist()
