#!/usr/bin/env python
"""One image-classification server for the scenario corpus, with injectable bottlenecks.

    python benchmarks/scenarios/server.py --port P --framework F --model M --runtime R
        [--fault X ...] [--workers N] [--threads N] [--cache] [--batch] [--gc-freeze]
        [--precision fp32|int8] [--feature-url URL] [--log-file PATH]

Binds 127.0.0.1. POST /classify takes a raw image body (JPEG/PNG bytes) and answers
{"label": int, "score": float} (plus "name" when a label service is configured); with
``--fault json`` it takes {"image": <base64>} and answers a verbose JSON document instead.
GET /health answers 200 once the model is loaded and warmed up.

Frameworks: httpserver (stdlib ThreadingHTTPServer), flask (werkzeug threaded dev server),
fastapi (uvicorn; ``--workers N`` runs N uvicorn worker processes), aiohttp (inference in
an executor), gunicorn (the Flask app in gthread workers, ``--workers`` processes).
Runtimes: ort (onnxruntime, int8 by default) and torch (TorchScript; eager with the fault).

Faults (each a code path below, marked FAULT):

    lock              inference inside one global threading.Lock
    executor1         inference through a ThreadPoolExecutor(max_workers=1)
    native-threads    4 intra-op threads per inference (ORT/torch) under many handler threads
    gc                gc.collect() after every request with a large long-lived object graph
                      (fix: --gc-freeze, the same code with gc.freeze() after startup)
    logging           a large debug record per request, written and fsync'ed synchronously
    downstream        label metadata fetched from the label service on every request
                      (fixed: the same lookups, cached for a minute)
    json              base64-in-JSON request and a verbose JSON response
    python-preprocess resize/normalise in a per-pixel Python loop
    big-decode        large JPEGs decoded at full size (fixed: Image.draft)
    fp32              the fp32 ONNX model (fixed: int8), same as --precision fp32
    unfused           ORT graph optimisations disabled
    eager             torch eager module (fix: --runtime ort --precision fp32)
    reload            model session rebuilt for every request
    no-batching       batch-1 inference, marker only (fix: --batch, a micro-batcher)
    stalls            every 40th request flushes stats to a slow sink while holding the stats lock
    gil-postprocess   score smoothing in pure Python (fixed: NumPy)

Threads are pinned by default (OMP/MKL/OpenBLAS to 1 before NumPy loads, intra-op and
inter-op threads to ``--threads``, default 1): on a 2-core machine oversubscription
otherwise slows torch many times over.
"""


import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import base64
import collections
import gc
import hashlib
import json
import logging
import math
import queue
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

from benchmarks.scenarios import models, preprocessing

FRAMEWORKS = ("httpserver", "flask", "fastapi", "aiohttp", "gunicorn")
RUNTIMES = ("ort", "torch")
FAULTS = ("lock", "executor1", "native-threads", "gc", "logging", "downstream", "json", "python-preprocess",
          "big-decode", "fp32", "unfused", "eager", "reload", "no-batching", "stalls", "gil-postprocess")
CONFIG_ENV = "PROF_SCENARIO_SERVER_CONFIG"
STATS_FLUSH_EVERY = 40
SMOOTH_TOP_K = 384
log = logging.getLogger("classifier")


@dataclass
class Config:
    port: int
    framework: str = "httpserver"
    model: str = "resnet"
    runtime: str = "ort"
    precision: str = "int8"
    faults: list[str] = field(default_factory=list)
    workers: int = 1
    threads: int = 1
    handler_threads: int = 4
    cache: bool = False
    batch: bool = False
    gc_freeze: bool = False
    feature_url: str | None = None
    log_file: str | None = None
    host: str = "127.0.0.1"

    def has(self, fault: str) -> bool:
        return fault in self.faults

    @property
    def intra_op_threads(self) -> int:
        # FAULT native-threads: 4 native threads per inference, with several inferences at once
        return 4 if self.has("native-threads") else self.threads

    @property
    def effective_precision(self) -> str:
        return "fp32" if self.has("fp32") else self.precision


# --------------------------------------------------------------------------- model


class Model:
    """ONNX Runtime session or torch module behind one ``predict(batch) -> logits``."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.size = models.SPECS[cfg.model].input_size
        self.eager = cfg.has("eager")
        self.runtime = "torch" if self.eager else cfg.runtime
        if self.runtime == "ort":
            self.path = models.artifact_path(cfg.model, cfg.effective_precision)
        else:
            import torch

            torch.set_num_threads(cfg.intra_op_threads)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass
            self.path = None if self.eager else models.artifact_path(cfg.model, "torchscript")
        self.impl = self.load()

    def load(self):
        if self.runtime == "ort":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.cfg.intra_op_threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            if self.cfg.has("unfused"):
                # FAULT unfused: no constant folding, no Conv+BN/activation or QDQ fusion
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            else:
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        import torch

        if self.eager:
            # FAULT eager: the training-code module, run op by op
            return models.build_module(self.cfg.model)
        return torch.jit.load(str(self.path)).eval()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        # FAULT reload: a fresh session (file read, graph optimisation) for every request
        impl = self.load() if self.cfg.has("reload") else self.impl
        if self.runtime == "ort":
            return impl.run(None, {"input": batch})[0]
        import torch

        with torch.inference_mode():
            return impl(torch.from_numpy(batch)).numpy()


class MicroBatcher:
    """Gathers concurrent requests into one batch: up to ``max_batch`` or ``max_wait_s``."""

    def __init__(self, predict, max_batch: int = 8, max_wait_s: float = 0.005):
        self.predict, self.max_batch, self.max_wait_s = predict, max_batch, max_wait_s
        self.pending: queue.Queue[tuple[np.ndarray, Future]] = queue.Queue()
        threading.Thread(target=self._loop, name="micro-batcher", daemon=True).start()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        future: Future = Future()
        self.pending.put((x, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            items = [self.pending.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(items) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    items.append(self.pending.get(timeout=remaining))
                except queue.Empty:
                    break
            try:
                out = self.predict(np.concatenate([x for x, _ in items]))
            except Exception as exc:  # noqa: BLE001 — hand the error to every waiting request
                for _, future in items:
                    future.set_exception(exc)
                continue
            for i, (_, future) in enumerate(items):
                future.set_result(out[i : i + 1])


# --------------------------------------------------------------------------- helpers


class LabelClient:
    """Label metadata from the label service; cached for a minute unless FAULT downstream."""

    def __init__(self, url: str, cached: bool, ttl_s: float = 60.0):
        self.url, self.cached, self.ttl_s = url.rstrip("/"), cached, ttl_s
        self._cache: dict[int, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    def _fetch(self, label: int, what: str) -> dict:
        with urllib.request.urlopen(f"{self.url}/labels/{label}?fields={what}", timeout=10) as response:
            return json.loads(response.read())

    def get(self, label: int) -> dict:
        if not self.cached:
            # FAULT downstream: two round trips to the label service on every request
            meta = self._fetch(label, "name")
            meta.update(self._fetch(label, "threshold"))
            return meta
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(label)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        meta = self._fetch(label, "name")
        meta.update(self._fetch(label, "threshold"))
        with self._lock:
            self._cache[label] = (now, meta)
        return meta


class RequestStats:
    """Per-request latencies, pushed out in batches of ``STATS_FLUSH_EVERY``."""

    def __init__(self, slow_flush: bool):
        self.slow_flush = slow_flush
        self.lock = threading.Lock()
        self.buffer: list[float] = []
        self.flushed = 0

    def record(self, latency_ms: float) -> None:
        with self.lock:
            self.buffer.append(latency_ms)
            if len(self.buffer) >= STATS_FLUSH_EVERY:
                if self.slow_flush:
                    # FAULT stalls: a synchronous push to a slow metrics sink (~350 ms) made
                    # while holding the lock every request needs to record its latency
                    time.sleep(0.35)
                self.flushed += len(self.buffer)
                self.buffer = []


class FsyncFileHandler(logging.FileHandler):
    """A 'durable' log file: every record is flushed and fsync'ed before the request goes on."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if self.stream is not None:
            os.fsync(self.stream.fileno())


class LRUCache:
    def __init__(self, capacity: int = 1024):
        self.capacity = capacity
        self.items: collections.OrderedDict[bytes, dict] = collections.OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: bytes) -> dict | None:
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key: bytes, value: dict) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)


class CatalogEntry:
    __slots__ = ("aliases", "id", "label", "name", "parents")

    def __init__(self, entry_id: int, label: int):
        self.id = entry_id
        self.label = label
        self.name = f"concept-{entry_id}"
        self.parents = [label, label // 10, label // 100]
        self.aliases = {"en": self.name}


def build_catalog(per_label: int = 30) -> dict[int, list[CatalogEntry]]:
    """A concept catalog (30k entries, ~90k tracked objects) kept for the process's life."""
    return {label: [CatalogEntry(label * per_label + i, label) for i in range(per_label)] for label in range(1000)}


# --------------------------------------------------------------------------- the service


class Service:
    """Framework-independent request handling: bytes in, result dict out."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.model = Model(cfg)
        self.size = self.model.size
        self.infer_lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1) if cfg.has("executor1") and cfg.framework != "aiohttp" else None
        self.batcher = MicroBatcher(self.model.predict) if cfg.batch else None
        self.cache = LRUCache() if cfg.cache else None
        self.labels = LabelClient(cfg.feature_url, cached=not cfg.has("downstream")) if cfg.feature_url else None
        self.stats = RequestStats(slow_flush=cfg.has("stalls"))
        rng = np.random.default_rng(7)
        embeddings = rng.normal(size=(models.NUM_CLASSES, 16)).astype(np.float32)
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        self.similarity = np.maximum(embeddings @ embeddings.T, 0.0).astype(np.float32)
        self.similarity /= self.similarity.sum(axis=1, keepdims=True)
        self.similarity_rows = self.similarity.tolist() if cfg.has("gil-postprocess") else None
        self.memory_hygiene = cfg.has("gc") or cfg.gc_freeze
        self.catalog = build_catalog() if self.memory_hygiene else None
        self._setup_logging()
        for _ in range(3):  # warm-up: first runs allocate arenas / specialise the TorchScript graph
            self.model.predict(np.zeros((1, 3, self.size, self.size), np.float32))
        if cfg.gc_freeze:
            # the fix of FAULT gc: everything alive after startup moves to the permanent
            # generation, so collections only scan what requests allocate
            gc.collect()
            gc.freeze()

    def _setup_logging(self) -> None:
        path = self.cfg.log_file or os.path.join(tempfile.gettempdir(), f"prof-scenario-{self.cfg.port}.log")
        if self.cfg.has("logging"):
            handler: logging.Handler = FsyncFileHandler(path)
            log.setLevel(logging.DEBUG)
        else:
            handler = logging.FileHandler(path)
            log.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(process)d %(name)s %(message)s"))
        log.handlers[:] = [handler]
        log.propagate = False

    # ---- stages

    def preprocess(self, data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
        # FAULT big-decode: without draft a 12-megapixel JPEG is decoded at full size
        image = preprocessing.decode(data, self.size, draft=not self.cfg.has("big-decode"))
        if self.cfg.has("python-preprocess"):
            # FAULT python-preprocess: per-pixel loop in Python
            return preprocessing.to_tensor_python(image, self.size), image.size
        return preprocessing.to_tensor(image, self.size), image.size

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.batcher is not None:
            return self.batcher(x)
        if self.cfg.has("lock"):
            # FAULT lock: "the session is not thread-safe" — it is; this serialises inference
            with self.infer_lock:
                return self.model.predict(x)
        if self.executor is not None:
            # FAULT executor1: one inference thread for the whole server
            return self.executor.submit(self.model.predict, x).result()
        return self.model.predict(x)

    def postprocess(self, logits: np.ndarray) -> tuple[int, float, np.ndarray]:
        """Softmax, then scores of the top candidates smoothed over similar classes."""
        if self.cfg.has("gil-postprocess"):
            # FAULT gil-postprocess: the same arithmetic in pure Python, holding the GIL
            values = logits[0].tolist()
            peak = max(values)
            exps = [math.exp(v - peak) for v in values]
            total = sum(exps)
            probs = [e / total for e in exps]
            top = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)[:SMOOTH_TOP_K]
            best, best_score = top[0], -1.0
            for i in top:
                row = self.similarity_rows[i]
                smoothed = 0.0
                for j in range(len(probs)):
                    smoothed += row[j] * probs[j]
                score = 0.7 * probs[i] + 0.3 * smoothed
                if score > best_score:
                    best, best_score = i, score
            return best, best_score, np.asarray(probs, dtype=np.float32)
        z = logits[0] - logits[0].max()
        probs = np.exp(z) / np.exp(z).sum()
        top = np.argsort(-probs)[:SMOOTH_TOP_K]
        scores = 0.7 * probs[top] + 0.3 * (self.similarity[top] @ probs)
        k = int(np.argmax(scores))
        return int(top[k]), float(scores[k]), probs

    # ---- requests

    def _run(self, data: bytes, request_id: str) -> tuple[dict, np.ndarray, np.ndarray, tuple[int, int]]:
        trace = None
        if self.memory_hygiene:
            # a per-request trace context with back-references (cyclic garbage)
            trace = {"id": request_id, "spans": []}
            trace["spans"].append({"trace": trace, "stage": "start", "t": time.perf_counter()})
        x, source_size = self.preprocess(data)
        logits = self.infer(x)
        label, score, probs = self.postprocess(logits)
        result = {"label": label, "score": round(score, 6)}
        if self.labels is not None:
            meta = self.labels.get(label)
            result["name"] = meta["name"]
        if trace is not None:
            trace["spans"].append({"trace": trace, "stage": "done", "t": time.perf_counter()})
            del trace
            # FAULT gc (without --gc-freeze): "free memory after every inference" — a full
            # collection that walks every long-lived object the process holds
            gc.collect()
        return result, x, probs, source_size

    def _log(self, request_id: str, result: dict, x: np.ndarray, probs: np.ndarray, elapsed_ms: float) -> None:
        if self.cfg.has("logging"):
            # FAULT logging: the whole score vector and a subsampled input dump per request
            record = {
                "request_id": request_id,
                "result": result,
                "input": {"shape": list(x.shape), "mean": float(x.mean()), "std": float(x.std()),
                          "values": x[0, :, ::8, ::8].round(4).tolist()},
                "scores": {f"class_{i:04d}": float(p) for i, p in enumerate(probs)},
                "elapsed_ms": elapsed_ms,
            }
            log.debug("request %s\n%s", request_id, json.dumps(record, indent=2))
        else:
            log.info("request %s label=%d score=%.4f %.1fms", request_id, result["label"], result["score"], elapsed_ms)

    def classify(self, data: bytes) -> dict:
        """Raw image bytes -> small result."""
        started = time.perf_counter()
        key = None
        if self.cache is not None:
            key = hashlib.blake2b(data, digest_size=16).digest()
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        request_id = uuid.uuid4().hex
        result, x, probs, _ = self._run(data, request_id)
        elapsed_ms = (time.perf_counter() - started) * 1000
        self._log(request_id, result, x, probs, elapsed_ms)
        self.stats.record(elapsed_ms)
        if key is not None:
            self.cache.put(key, result)
        return result

    def classify_document(self, document: dict) -> dict:
        """FAULT json: {"image": base64} in, a verbose document out (every class, sorted)."""
        started = time.perf_counter()
        request_id = document.get("request_id") or uuid.uuid4().hex
        data = base64.b64decode(document["image"])
        result, x, probs, source_size = self._run(data, request_id)
        order = np.argsort(-probs)
        elapsed_ms = (time.perf_counter() - started) * 1000
        self._log(request_id, result, x, probs, elapsed_ms)
        self.stats.record(elapsed_ms)
        return {
            "request_id": request_id,
            "model": {"family": self.cfg.model, "runtime": self.model.runtime,
                      "precision": self.cfg.effective_precision, "input_size": self.size},
            "input": {"width": source_size[0], "height": source_size[1], "bytes": len(data)},
            "label": result["label"],
            "score": result["score"],
            "predictions": [
                {"rank": rank, "label": int(i), "name": f"class_{int(i):04d}", "probability": float(probs[i]),
                 "logprob": float(np.log(probs[i] + 1e-12))}
                for rank, i in enumerate(order)
            ],
            "timing": {"total_ms": elapsed_ms},
        }


# --------------------------------------------------------------------------- frameworks


def run_httpserver(service: Service) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in two writes: without TCP_NODELAY a keep-alive client's
        # delayed ACK holds the body back ~40 ms (Nagle)
        disable_nagle_algorithm = True

        def _reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                self._reply(200, {"status": "ok"})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self):
            if self.path != "/classify":
                self._reply(404, {"error": "not found"})
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                if service.cfg.has("json"):
                    self._reply(200, service.classify_document(json.loads(body)))
                else:
                    self._reply(200, service.classify(body))
            except Exception as exc:  # noqa: BLE001
                self._reply(400, {"error": str(exc)})

        def log_message(self, format, *args):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128  # socketserver's default backlog of 5 resets bursts of connects

    Server((service.cfg.host, service.cfg.port), Handler).serve_forever()


def create_flask_app(service: Service):
    from flask import Flask, jsonify, request

    app = Flask("classifier")

    @app.get("/health")
    def health():
        return jsonify(status="ok")

    @app.post("/classify")
    def classify():
        if service.cfg.has("json"):
            return jsonify(service.classify_document(request.get_json(force=True)))
        return jsonify(service.classify(request.get_data()))

    return app


def create_fastapi_app(service: Service):
    from fastapi import FastAPI, Request
    from pydantic import BaseModel
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="classifier")

    @app.get("/health")
    def health():
        return {"status": "ok"}

    if service.cfg.has("json"):

        class ImageIn(BaseModel):
            image: str
            request_id: str | None = None

        @app.post("/classify")
        def classify_json(payload: ImageIn):
            return service.classify_document(payload.model_dump())

    else:

        @app.post("/classify")
        async def classify(request: Request):
            data = await request.body()
            return await run_in_threadpool(service.classify, data)

    return app


def asgi_app_factory():
    """uvicorn --factory entry point for multi-worker runs: config from the environment."""
    cfg = Config(**json.loads(os.environ[CONFIG_ENV]))
    return create_fastapi_app(Service(cfg))


def create_aiohttp_app(service: Service):
    import asyncio

    from aiohttp import web

    # FAULT executor1 (aiohttp): a single-thread executor for the blocking work
    executor = ThreadPoolExecutor(max_workers=1 if service.cfg.has("executor1") else 4)
    routes = web.RouteTableDef()

    @routes.get("/health")
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    @routes.post("/classify")
    async def classify(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        if service.cfg.has("json"):
            document = await request.json()
            result = await loop.run_in_executor(executor, service.classify_document, document)
        else:
            data = await request.read()
            result = await loop.run_in_executor(executor, service.classify, data)
        return web.json_response(result)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(routes)
    return app


def run_gunicorn(cfg: Config) -> None:
    from gunicorn.app.base import BaseApplication

    class Application(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{cfg.host}:{cfg.port}")
            self.cfg.set("workers", cfg.workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", cfg.handler_threads)
            self.cfg.set("timeout", 120)
            self.cfg.set("loglevel", "warning")

        def load(self):  # in each worker, after the fork: every worker has its own session
            return create_flask_app(Service(cfg))

    Application().run()


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--framework", choices=FRAMEWORKS, default="httpserver")
    parser.add_argument("--model", choices=models.FAMILIES, default="resnet")
    parser.add_argument("--runtime", choices=RUNTIMES, default="ort")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="int8", help="ONNX model (ort runtime)")
    parser.add_argument("--fault", action="append", default=[], choices=FAULTS, help="inject a bottleneck (repeatable)")
    parser.add_argument("--workers", type=int, default=None, help="processes (fastapi, gunicorn)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the runtime")
    parser.add_argument("--handler-threads", type=int, default=4, help="gunicorn gthread threads per worker")
    parser.add_argument("--cache", action="store_true", help="LRU cache of results keyed by the body's hash")
    parser.add_argument("--batch", action="store_true", help="micro-batch concurrent requests (8 / 5 ms)")
    parser.add_argument("--gc-freeze", action="store_true", help="fix of the gc fault: gc.freeze() after startup")
    parser.add_argument("--feature-url", default=None, help="label service base URL")
    parser.add_argument("--log-file", default=None)
    args = parser.parse_args(argv)
    workers = args.workers if args.workers is not None else (2 if args.framework == "gunicorn" else 1)
    if workers > 1 and args.framework not in ("fastapi", "gunicorn"):
        parser.error("--workers > 1 needs --framework fastapi or gunicorn")
    if "downstream" in args.fault and not args.feature_url:
        parser.error("--fault downstream needs --feature-url (the label service)")
    if args.gc_freeze and "gc" in args.fault:
        parser.error("--gc-freeze is the fix of --fault gc: give one of them")
    return Config(port=args.port, framework=args.framework, model=args.model, runtime=args.runtime,
                  precision=args.precision, faults=sorted(set(args.fault)), workers=workers, threads=args.threads,
                  handler_threads=args.handler_threads, cache=args.cache, batch=args.batch, gc_freeze=args.gc_freeze,
                  feature_url=args.feature_url, log_file=args.log_file)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    # the model file, held here while the server runs (as a server's main() holding its model path does);
    # building it here also means workers only load it
    model_file = str(models.artifact_path(cfg.model, "torchscript" if cfg.runtime == "torch" else cfg.effective_precision))
    print(f"serving {model_file}", file=sys.stderr, flush=True)
    if cfg.framework == "gunicorn":
        run_gunicorn(cfg)
        return 0
    if cfg.framework == "fastapi" and cfg.workers > 1:
        import uvicorn

        os.environ[CONFIG_ENV] = json.dumps(asdict(cfg))
        uvicorn.run("benchmarks.scenarios.server:asgi_app_factory", factory=True, host=cfg.host, port=cfg.port,
                    workers=cfg.workers, log_level="warning", access_log=False)
        return 0
    service = Service(cfg)
    if cfg.framework == "httpserver":
        run_httpserver(service)
    elif cfg.framework == "flask":
        create_flask_app(service).run(host=cfg.host, port=cfg.port, threaded=True)
    elif cfg.framework == "fastapi":
        import uvicorn

        uvicorn.run(create_fastapi_app(service), host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
    elif cfg.framework == "aiohttp":
        from aiohttp import web

        web.run_app(create_aiohttp_app(service), host=cfg.host, port=cfg.port, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
