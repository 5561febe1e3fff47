"""A plain threaded ``http.server`` for the wire probe's tests: keep-alive HTTP/1.1, bodies
by Content-Length or chunked, a CPU-bound path for py-spy, and a path that closes the
listening socket (a port that goes away mid-capture). Run: ``python wire_test_server.py PORT``."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def spin_for(seconds: float) -> int:
    deadline, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline:
        n += 1
    return n


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/spin"):
            self._answer(200, {"n": spin_for(0.15)})
        elif self.path == "/close-listener":
            self._answer(200, {"closing": True})
            threading.Thread(target=self.server.socket.close).start()
        elif self.path.startswith("/missing"):
            self._answer(404, {"error": "not found"})
        else:
            self._answer(200, {"ok": True})

    def do_POST(self) -> None:
        body = self._body()
        time.sleep(0.002)
        self._answer(200, {"received": len(body), "echo": "x" * (len(body) % 997)})


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever(poll_interval=0.1)
    except (OSError, ValueError):  # the listening socket was closed under serve_forever
        while True:
            time.sleep(1)
