"""A server prof did not write, for diagnosis tests and the diagnosis matrix: a threaded
``http.server`` whose request path is plain Python and NumPy, in one of four shapes.

  python foreign_server.py PORT clean        raw bytes in, NumPy "model", small JSON out
  python foreign_server.py PORT json         base64 image inside JSON in, a verbose JSON answer out
  python foreign_server.py PORT gil          the "model" is pure Python: threads queue on the GIL
  python foreign_server.py PORT stalls       every 20th request stalls 400 ms in a cache flush
  python foreign_server.py PORT lock         the model runs behind one lock: handler threads queue on it
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before NumPy loads its BLAS

import numpy as np  # noqa: E402

MODE = sys.argv[2] if len(sys.argv) > 2 else "clean"
WEIGHTS = np.random.default_rng(0).standard_normal((512, 4096)).astype(np.float32)
COUNTER = iter(range(1 << 62))
LOCK = threading.Lock()


def forward(pixels: np.ndarray) -> np.ndarray:
    """The "model": NumPy (releases the GIL) or, in gil mode, the same idea in pure Python."""
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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

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
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever(poll_interval=0.1)
