"""The reference classification server: FastAPI on uvicorn.

Request path, each step an explicit stage recorded as a span:
receive -> deserialize -> (cache lookup) -> decode -> preprocess -> queue -> h2d ->
inference -> d2h -> postprocess -> serialize.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import sys
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from probes.stages import NO_ID, NullRecorder, SpanRecorder, SpanSink, SpanSwitch, Stage, recorder_from_env
from samples import preprocess
from samples.model import engines
from samples.model.artifacts import ArtifactError
from samples.sample_server import cache as caches
from samples.sample_server import payload
from samples.sample_server.config import ENV_CONFIG, ServerConfig
from samples.sample_server.inference import DirectRunner, DynamicBatcher, postprocess
from samples.sample_server.metrics import ServerMetrics

log = logging.getLogger("samples.sample_server")
_NOW = time.perf_counter_ns


def label_name(index: int) -> str:
    """Seeded weights have no real classes; labels are stable synthetic names."""
    return f"class_{index:04d}"


class BodyTooLarge(Exception):
    pass


@dataclass
class RequestTrace:
    """Stage timings of one request; spans go to the recorder when the request ends."""

    request_id: str
    stages: list[tuple[Stage, int, int]] = field(default_factory=list)

    def add(self, stage: Stage, start_ns: int, end_ns: int) -> None:
        self.stages.append((stage, start_ns, end_ns))

    def timings_ms(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for stage, start, end in self.stages:
            out[stage.label] = round(out.get(stage.label, 0.0) + (end - start) / 1e6, 3)
        return out


class ClassifierService:
    """Everything a request needs, built once at start-up and closed at shutdown."""

    def __init__(self, config: ServerConfig, spans: SpanSink | None = None) -> None:
        self.config = config
        # A switch, so the agent can turn spans on and off while serving.
        self.spans = SpanSwitch(spans if spans is not None else _make_recorder(config))
        self.metrics = ServerMetrics()
        self.cache = caches.make_cache(config.cache, config.cache_size)
        self.cpu_pool = ThreadPoolExecutor(max_workers=config.cpu_threads, thread_name_prefix="preprocess")
        self.engine: engines.Engine | None = None
        self.runner: DirectRunner | DynamicBatcher | None = None
        self._ids = itertools.count()
        self._id_prefix = f"{os.getpid():x}"
        # Results depend on the model, its variant and input size, and top_k: servers sharing a
        # Redis must never answer from another configuration's entries.
        identity = [config.backend, config.precision, config.input_size, config.model or "resnet18", config.top_k]
        self._cache_prefix = "prof:" + hashlib.sha256(repr(identity).encode()).hexdigest()[:16]

    def load_model(self) -> None:
        t0 = _NOW()
        self.engine = engines.load_engine(self.config.engine_settings())
        self.spans.record(Stage.MODEL_LOAD, t0, _NOW())

    async def start(self) -> None:
        assert self.engine is not None, "load_model() first"
        on_batch = self.metrics.batch_size.observe
        settings = self.config.engine_settings()
        reload = (lambda: engines.load_engine(settings)) if self.config.reload_per_request else None
        if self.config.batching:
            self.runner = DynamicBatcher(self.engine, self.spans, self.config.max_batch,
                                         self.config.max_wait_ms, on_batch, reload)
        else:
            self.runner = DirectRunner(self.engine, self.spans, on_batch, reload)
        await self.runner.start()
        if isinstance(self.cache, caches.RedisCache) and not await self.cache.ping():
            log.warning("cache: redis at %s is down; serving uncached until it answers", self.cache.url)
        log.info("ready: %s", self.engine.describe())

    async def stop(self) -> None:
        if self.runner is not None and self.engine is not None:
            for path in await self.runner.on_inference_thread(self.engine.close):
                log.info("framework profile written: %s", path)
        if self.runner is not None:
            await self.runner.stop()
        self.cpu_pool.shutdown(wait=True, cancel_futures=True)
        await self.cache.close()
        self.spans.flush()

    def new_request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _decode_and_preprocess(self, image_bytes: bytes, trace: RequestTrace):
        assert self.engine is not None
        t0 = _NOW()
        draft = self.engine.contract.resize if self.config.decode_draft else None
        image = preprocess.decode_image(image_bytes, self.config.max_pixels, draft)
        t1 = _NOW()
        array = preprocess.preprocess_image(image, self.engine.contract)
        trace.add(Stage.DECODE, t0, t1)
        trace.add(Stage.PREPROCESS, t1, _NOW())
        return array

    async def classify(self, image_bytes: bytes, trace: RequestTrace) -> tuple[dict, bool]:
        assert self.runner is not None
        caching = self.cache.kind != "off"
        if caching:
            t0 = _NOW()
            key = f"{self._cache_prefix}:{hashlib.sha256(image_bytes).hexdigest()}"
            cached = await self.cache.get(key)
            trace.add(Stage.OTHER, t0, _NOW())
            self.metrics.cache.labels("hit" if cached else "miss").inc()
            if cached is not None:
                return cached, True
        loop = asyncio.get_running_loop()
        array = await loop.run_in_executor(self.cpu_pool, self._decode_and_preprocess, image_bytes, trace)
        result = await self.runner.submit(array)
        trace.add(Stage.QUEUE, *result.queued_ns)
        for stage, (start, end) in result.stage_ns.items():
            trace.add(stage, start, end)
        t0 = _NOW()
        indices, scores = postprocess(result.logits, self.config.top_k)
        trace.add(Stage.POSTPROCESS, t0, _NOW())
        answer = {"indices": indices, "scores": scores, "batch_id": result.batch_id,
                  "batch_size": result.batch_size}
        if caching:
            await self.cache.put(key, {"indices": indices, "scores": scores})
        return answer, False

    def finish(self, trace: RequestTrace, batch_id: int) -> None:
        for stage, start, end in trace.stages:
            self.metrics.stage.labels(stage.label).observe((end - start) / 1e9)
            if stage in (Stage.H2D, Stage.INFERENCE, Stage.D2H):
                continue  # recorded once per batch by the runner
            self.spans.record(stage, start, end, trace.request_id, batch_id)


class AgentHooks:
    """What ``prof attach`` may switch in this server through the agent: stage spans into
    ``<out_dir>/stages`` and framework profiling (ORT or torch.profiler) into
    ``<out_dir>/ort`` or ``<out_dir>/torch``, for one window at a time."""

    capabilities = ("stages", "framework")

    def __init__(self, service: ClassifierService) -> None:
        self.service = service
        self._spans_before: SpanSink | None = None
        self._framework = False

    def start(self, out_dir: Path, probes: set[str]) -> list[str]:
        started = []
        if "stages" in probes and not self.service.spans.enabled:
            self._spans_before = self.service.spans.set(SpanRecorder(out_dir / "stages"))
            started.append("stages")
        engine, runner = self.service.engine, self.service.runner
        if "framework" in probes and engine is not None and runner is not None:
            sub = "ort" if engine.name == "ort" else "torch"
            if runner.call_on_inference_thread(lambda: engine.start_profiling(out_dir / sub)):
                self._framework = True
                started.append("framework")
        return started

    def stop(self) -> list[str]:
        files: list[str] = []
        if self._spans_before is not None:
            recorder = self.service.spans.set(self._spans_before)  # type: ignore[arg-type]
            self._spans_before = None
            if isinstance(recorder, SpanRecorder):
                recorder.flush()
                files.extend(str(p) for p in sorted(recorder.out_dir.glob("spans-*.npz")))
        engine, runner = self.service.engine, self.service.runner
        if self._framework and engine is not None and runner is not None:
            self._framework = False
            files.extend(str(p) for p in runner.call_on_inference_thread(engine.stop_profiling))
        return files


def _make_recorder(config: ServerConfig) -> SpanRecorder | NullRecorder:
    if config.spans_dir:
        return SpanRecorder(config.spans_dir)
    return recorder_from_env()


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, reason: str, message: str, request_id: str) -> JSONResponse:
    return JSONResponse({"error": reason, "detail": message, "request_id": request_id}, status_code=status,
                        headers={"X-Request-ID": request_id})


async def handle_classify(service: ClassifierService, request: Request) -> Response:
    trace = RequestTrace(request.headers.get("x-request-id") or service.new_request_id())
    metrics = service.metrics
    metrics.in_flight.inc()
    started = _NOW()
    batch_id = NO_ID
    try:
        response, batch_id = await _classify_steps(service, request, trace)
    except BodyTooLarge:
        metrics.rejected.labels("body_too_large").inc()
        limit = service.config.max_body_bytes
        response = _error(413, "body_too_large", f"request body exceeds {limit} bytes", trace.request_id)
    except (payload.PayloadError, preprocess.ImageRejected) as exc:
        metrics.rejected.labels(exc.reason).inc()
        response = _error(exc.status, exc.reason, str(exc), trace.request_id)
    except Exception:
        log.exception("request %s failed", trace.request_id)  # details in the server log only
        response = _error(500, "internal_error", "the server failed to classify this image; see its log",
                          trace.request_id)
    finally:
        metrics.in_flight.dec()
    metrics.latency.observe((_NOW() - started) / 1e9)
    metrics.requests.labels(str(response.status_code)).inc()
    service.finish(trace, batch_id)
    return response


async def _classify_steps(
    service: ClassifierService, request: Request, trace: RequestTrace
) -> tuple[Response, int]:
    t0 = _NOW()
    body = await _read_body(request, service.config.max_body_bytes)
    t1 = _NOW()
    trace.add(Stage.RECEIVE, t0, t1)
    image_bytes, wire_format = await payload.extract_image(body, request.headers, service.config.max_body_bytes)
    trace.add(Stage.DESERIALIZE, t1, _NOW())
    answer, cached = await service.classify(image_bytes, trace)
    t0 = _NOW()
    document = {
        "request_id": trace.request_id,
        "top_k": [{"label": label_name(i), "index": i, "score": s} for i, s in zip(answer["indices"], answer["scores"])],
        "cached": cached,
        "batch_size": answer.get("batch_size", 0),
        "payload": wire_format,
        "timings_ms": trace.timings_ms(),
    }
    body_out, content_type = payload.encode_response(document, payload.wants_msgpack(request.headers.get("accept")))
    trace.add(Stage.SERIALIZE, t0, _NOW())
    batch_id = answer.get("batch_id", NO_ID)
    headers = {"X-Request-ID": trace.request_id, "X-Batch-ID": str(batch_id)}
    return Response(body_out, media_type=content_type, headers=headers), batch_id


def _install_agent(service: ClassifierService):
    from probes import agent

    try:
        installed = agent.install(AgentHooks(service))
    except (agent.AgentError, OSError) as exc:
        log.warning("prof agent off: %s", exc)
        return None
    log.info("prof agent listening on %s", installed.path)
    return installed


def create_app(config: ServerConfig | None = None, spans: SpanSink | None = None) -> FastAPI:
    config = config or ServerConfig.from_json(os.environ.get(ENV_CONFIG, "{}"))
    service = ClassifierService(config, spans)
    try:
        service.load_model()
    except (engines.EngineError, ArtifactError) as exc:
        # SystemExit passes through uvicorn's loader, which would print a traceback for
        # an Exception; the user gets the one line that says what to change.
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        agent = _install_agent(service) if config.agent else None
        try:
            yield
        finally:
            if agent is not None:
                from probes.agent import uninstall

                uninstall()
            await service.stop()

    app = FastAPI(title="prof sample classifier", lifespan=lifespan)
    app.state.service = service

    @app.post("/classify")
    async def classify(request: Request) -> Response:
        return await handle_classify(service, request)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ready = service.engine is not None
        body = {"status": "ok" if ready else "starting", "pid": os.getpid(),
                "engine": service.engine.describe() if ready else None, "cache": service.cache.status(),
                "batching": {"max_batch": config.max_batch, "max_wait_ms": config.max_wait_ms},
                "profiling": {"spans": service.spans.enabled}}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        data, content_type = service.metrics.exposition()
        return Response(data, media_type=content_type)

    return app
