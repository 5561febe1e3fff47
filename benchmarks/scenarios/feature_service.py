"""A tiny "label metadata" service that scenario servers call downstream.

GET /labels/<id> answers {"id", "name", "threshold", "group"} after ``--delay-ms``
(default 25 ms), standing in for a remote metadata store or feature service that a
classifier consults for display names and per-class score thresholds. GET /health
answers at once.

    python benchmarks/scenarios/feature_service.py --port P [--delay-ms 25]
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=25.0)
    args = parser.parse_args(argv)
    delay = args.delay_ms / 1000.0

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in two writes: without TCP_NODELAY a keep-alive client's
        # delayed ACK holds the body back ~40 ms (Nagle)
        disable_nagle_algorithm = True

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/health":
                body = b'{"status":"ok"}'
            elif path.startswith("/labels/"):
                label = int(path.rsplit("/", 1)[1])
                time.sleep(delay)  # the remote store's latency
                body = json.dumps({"id": label, "name": f"class_{label:04d}", "threshold": 0.0005,
                                   "group": label // 100}).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    Server(("127.0.0.1", args.port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
