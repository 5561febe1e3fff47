"""A server prof did not write, for diagnosis tests and the diagnosis matrix: a threaded
``http.server`` whose request path is plain Python and NumPy, in one of four shapes.

  python foreign_server.py PORT clean        raw bytes in, NumPy "model", small JSON out
  python foreign_server.py PORT json         base64 image inside JSON in, a verbose JSON answer out
  python foreign_server.py PORT gil          the "model" is pure Python: threads queue on the GIL
  python foreign_server.py PORT stalls       every 20th request stalls 400 ms in a cache flush
  python foreign_server.py PORT lock         the model runs behind one lock: handler threads queue on it
  python foreign_server.py PORT ort MODEL    an ONNX convnet (written to MODEL if missing) in ONNX Runtime,
                                             one intra-op thread per session run
  python foreign_server.py PORT native MODEL the same with 4 intra-op threads per run, on every handler thread
  python foreign_server.py PORT logging LOG  every request logs its input bytes and scores to LOG, synchronously
  python foreign_server.py PORT downstream P every request first asks a feature service on port P (20 ms)
  python foreign_server.py PORT feature      that feature service: answers after 20 ms
  python foreign_server.py PORT gc           a large long-lived heap, and a history of each request's objects
                                             kept a while: full collections scan the whole heap often
"""

from __future__ import annotations

import base64
import collections
import http.client
import json
import logging
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before NumPy loads its BLAS

import numpy as np  # noqa: E402

MODE = sys.argv[2] if len(sys.argv) > 2 else "clean"
SESSION = None
WEIGHTS = np.random.default_rng(0).standard_normal((512, 4096)).astype(np.float32)
COUNTER = iter(range(1 << 62))
LOCK = threading.Lock()


def write_convnet(path: str) -> None:
    """A small convnet (three strided convolutions, pooling, a classifier) as an ONNX file."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(1)
    nodes, weights, channels, last = [], [], 3, "input"
    for i, width in enumerate((64, 128, 256)):
        weights.append(numpy_helper.from_array((rng.standard_normal((width, channels, 3, 3)) * 0.1).astype(np.float32),
                                               f"w{i}"))
        nodes += [helper.make_node("Conv", [last, f"w{i}"], [f"c{i}"], strides=[2, 2], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        channels, last = width, f"r{i}"
    weights.append(numpy_helper.from_array((rng.standard_normal((1000, 256)) * 0.1).astype(np.float32), "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [last], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "convnet",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], weights)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def load_session(path: str, intra_op_threads: int):
    import onnxruntime as ort

    if not os.path.exists(path):
        write_convnet(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def forward(pixels: np.ndarray) -> np.ndarray:
    """The "model": NumPy (releases the GIL) or, in gil mode, the same idea in pure Python; in
    ort/native mode an ONNX convnet."""
    if SESSION is not None:
        x = np.resize(pixels, 3 * 224 * 224).reshape(1, 3, 224, 224).astype(np.float32) / 255.0
        return SESSION.run(None, {"input": x})[0].ravel()
    if MODE == "gil":
        total = 0.0
        values = pixels[:20_000].tolist()
        for _ in range(40):
            for value in values:
                total += value * 0.5
        return np.asarray([total], dtype=np.float32)
    x = np.resize(pixels.astype(np.float32), (4096, 16))
    out = x
    for _ in range(4):
        out = WEIGHTS @ np.resize(out, (4096, 16))
    return out.ravel()[:1000]


def flush_cache() -> None:
    time.sleep(0.4)


LOG = logging.getLogger("classify")
HISTORY: "collections.deque[list]" = collections.deque(maxlen=100)


def features() -> bytes:
    """The downstream call: a feature service on another port, a new connection each time."""
    connection = http.client.HTTPConnection("127.0.0.1", int(sys.argv[3]), timeout=10)
    connection.request("GET", "/features")
    data = connection.getresponse().read()
    connection.close()
    return data


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # the feature service
        time.sleep(0.02)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if MODE == "json":
            for _ in range(12):  # a client library that unwraps the image over and over
                image = base64.b64decode(json.loads(body)["image"])
        else:
            image = body
        if MODE == "lock":
            with LOCK:  # one model, not thread-safe: every request waits here for the one before
                scores = forward(np.frombuffer(image, dtype=np.uint8))
        else:
            scores = forward(np.frombuffer(image, dtype=np.uint8))
        if MODE == "downstream":
            features()
        if MODE == "logging":
            LOG.debug("input %s scores %s", np.frombuffer(image, dtype=np.uint8).tolist(), scores.tolist())
        if MODE == "gc":  # per-request history kept for a while: survivors pile up until a full collection
            HISTORY.append([{"i": i, "seen": [len(image)]} for i in range(4_000)])
        if MODE == "stalls" and next(COUNTER) % 20 == 19:
            flush_cache()
        if MODE == "json":
            answer = json.dumps({"scores": [float(s) for s in scores] * 20, "labels": [str(i) for i in range(20000)]})
        else:
            answer = json.dumps({"top": int(np.argmax(scores))})
        data = answer.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    if MODE == "gc":  # a lookup table of a million small objects, kept for the life of the process
        TABLE = [{"id": i, "tags": [i, str(i)]} for i in range(1_000_000)]
    if MODE == "logging":
        handler = logging.FileHandler(sys.argv[3])
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.DEBUG)
    if MODE in ("ort", "native"):
        SESSION = load_session(sys.argv[3], 4 if MODE == "native" else 1)
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever(poll_interval=0.1)
