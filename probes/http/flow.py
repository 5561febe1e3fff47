"""HTTP/1.1 exchanges rebuilt from the two reassembled byte streams of a TCP connection.

Parsing is llhttp's (Node.js's HTTP parser, through ``httptools``, which uvicorn already
depends on): incremental, so bodies spread over many segments, chunked or content-length
bodies, keep-alive and pipelined requests are all its business, not ours. Responses are
paired with requests in order, as HTTP/1.1 requires.

Nothing of a body is kept: its bytes feed a SHA-256, a byte count and the reading of an image
header (format, width, height: :mod:`probes.http.image_header`), then are dropped. Of
the headers only Content-Type, X-Request-ID and the framing ones are read. Query strings are
not recorded (they may carry tokens), only whether there was one.

A connection first seen mid-stream (a keep-alive connection opened before the capture) has
no known message boundary: each direction waits for a segment that starts a message (a
request line, or a status line) and parses from there. TLS and HTTP/2 are recognised and
left alone.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import httptools

from probes.http.image_header import ImageSniffer

REQUEST_ID_MAX = 128
_REQUEST_START = re.compile(rb"[A-Z]{3,10} [^ \r\n]+ HTTP/1\.[01]\r\n")
_RESPONSE_START = re.compile(rb"HTTP/1\.[01] \d{3}")
_TLS_RECORD = re.compile(rb"\x16\x03[\x00-\x04]")
_H2_PREFACE = b"PRI * HTTP/2.0"


@dataclass
class Exchange:
    """One request and (once it comes) its response, as seen on the wire."""

    conn: int
    seq: int
    client: str
    port: int
    start_ns: int
    method: str = ""
    path: str = ""
    has_query: bool = False
    content_type: str | None = None
    header_request_id: str | None = None
    chunked: bool = False
    request_end_ns: int | None = None
    request_bytes: int = 0
    response_start_ns: int | None = None
    end_ns: int | None = None
    status: int | None = None
    response_bytes: int = 0
    response_content_type: str | None = None
    outcome: str = "ok"
    _hash: "hashlib._Hash" = field(default_factory=hashlib.sha256, repr=False)
    _image: ImageSniffer = field(default_factory=ImageSniffer, repr=False)

    @property
    def request_id(self) -> str:
        return self.header_request_id or f"http-{self.conn}-{self.seq}"

    def record(self) -> dict:
        """The line written to the probe's artifact (no body, no query, two headers)."""
        return {"conn": self.conn, "client": self.client, "port": self.port, "method": self.method,
                "path": self.path, "query": self.has_query, "content_type": self.content_type,
                "request_id": self.request_id, "id_from_header": self.header_request_id is not None,
                "chunked": self.chunked, "start_ns": self.start_ns, "request_end_ns": self.request_end_ns,
                "response_start_ns": self.response_start_ns, "end_ns": self.end_ns, "status": self.status,
                "request_bytes": self.request_bytes, "response_bytes": self.response_bytes,
                "response_content_type": self.response_content_type,
                "body_sha256": self._hash.hexdigest(), "outcome": self.outcome,
                "image": list(self._image.result) if self._image.result else None}


@dataclass
class FlowCounters:
    """What went wrong or was skipped, summed over connections, for the session's notes."""

    malformed_requests: int = 0
    malformed_responses: int = 0
    unpaired_responses: int = 0
    skipped_bytes: int = 0
    tls_connections: int = 0
    http2_connections: int = 0
    upgraded_connections: int = 0
    gaps: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class HttpConnection:
    """Both directions of one TCP connection; completed exchanges go to ``emit``."""

    def __init__(self, conn: int, client: str, port: int, counters: FlowCounters,
                 emit: Callable[[Exchange], None], from_start: bool) -> None:
        self.conn, self.client, self.port = conn, client, port
        self.counters, self.emit = counters, emit
        self.protocol: str | None = None  # "tls", "http2", "upgraded": not parsed further
        self._now = 0
        self._seen_client_bytes = not from_start
        self._requests = httptools.HttpRequestParser(self) if from_start else None
        self._responses: httptools.HttpResponseParser | None = None
        self._response_side = _ResponseSide(self)
        if from_start:
            self._new_response_parser()
        self._current: Exchange | None = None
        self._pending: deque[Exchange] = deque()  # requests waiting for their response
        self._count = 0
        self._header: bytes = b""
        self._url = b""

    # -- client -> server ------------------------------------------------------------------

    def client_data(self, data: bytes, ts_ns: int, after_gap: bool = False) -> None:
        if self.protocol is not None:
            return
        if after_gap:
            self.counters.gaps += 1
            self._abandon_request("gap")
        if not self._seen_client_bytes:
            self._seen_client_bytes = True
            if _TLS_RECORD.match(data):
                self._set_protocol("tls")
                return
            if data.startswith(_H2_PREFACE):
                self._set_protocol("http2")
                return
        if self._requests is None:
            if not _REQUEST_START.match(data):
                self.counters.skipped_bytes += len(data)
                return
            self._requests = httptools.HttpRequestParser(self)
        self._now = ts_ns
        try:
            self._requests.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._set_protocol("upgraded")
        except httptools.HttpParserError:
            self.counters.malformed_requests += 1
            self._abandon_request("malformed", keep_for_response=True)

    def _abandon_request(self, outcome: str, keep_for_response: bool = False) -> None:
        """Drop the parser (resync at the next request line); a half-read request is kept
        waiting for its response (a malformed one gets its 400) or recorded as cut off."""
        self._requests = None
        exchange = self._current or (Exchange(self.conn, self._next_seq(), self.client, self.port, self._now)
                                     if outcome == "malformed" else None)
        self._current = None
        if exchange is None:
            return
        exchange.outcome = outcome
        if keep_for_response:
            exchange.request_end_ns = self._now
            self._pending.append(exchange)
        else:
            self.emit(exchange)

    def _next_seq(self) -> int:
        self._count += 1
        return self._count

    # httptools request callbacks
    def on_message_begin(self) -> None:
        self._current = Exchange(self.conn, self._next_seq(), self.client, self.port, self._now)
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self._current
        if exchange is None:
            return
        key = name.lower()
        if key == b"content-type":
            exchange.content_type = value.decode("latin-1")[:100]
        elif key == b"x-request-id":
            exchange.header_request_id = value.decode("latin-1")[:REQUEST_ID_MAX]
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            exchange.chunked = True

    def on_headers_complete(self) -> None:
        if self._current is not None and self._requests is not None:
            self._current.method = self._requests.get_method().decode("latin-1")
            parsed = httptools.parse_url(self._url) if self._url else None
            self._current.path = (parsed.path or b"").decode("latin-1")[:200] if parsed else ""
            self._current.has_query = bool(parsed and parsed.query)

    def on_body(self, body: bytes) -> None:
        if self._current is not None:
            self._current.request_bytes += len(body)
            self._current._hash.update(body)
            self._current._image.feed(body)

    def on_message_complete(self) -> None:
        if self._current is not None:
            self._current.request_end_ns = self._now
            self._pending.append(self._current)
            self._current = None

    # -- server -> client ------------------------------------------------------------------

    def server_data(self, data: bytes, ts_ns: int, after_gap: bool = False) -> None:
        if self.protocol is not None:
            return
        if after_gap:
            self.counters.gaps += 1
            self._responses = None
        if self._responses is None:
            if not _RESPONSE_START.match(data):
                self.counters.skipped_bytes += len(data)
                return
            self._new_response_parser()
        self._now = ts_ns
        try:
            self._responses.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._set_protocol("upgraded")
        except httptools.HttpParserError:
            self.counters.malformed_responses += 1
            self._responses = None

    def _new_response_parser(self) -> None:
        self._response_side = _ResponseSide(self)
        self._responses = httptools.HttpResponseParser(self._response_side)

    def response_parser_reset(self) -> None:
        if self._responses is not None:
            self._response_side.active = False  # the rest of this chunk is not a body to count
        self._responses = None

    def close(self, outcome: str = "aborted") -> None:
        """The connection ended (or the capture did): requests still waiting are recorded
        with ``outcome`` and no response."""
        if self._current is not None:
            self._pending.append(self._current)
            self._current = None
        while self._pending:
            exchange = self._pending.popleft()
            if exchange.outcome == "ok":
                exchange.outcome = outcome
            self.emit(exchange)

    def _set_protocol(self, protocol: str) -> None:
        self.protocol = protocol
        counter = {"tls": "tls_connections", "http2": "http2_connections", "upgraded": "upgraded_connections"}
        setattr(self.counters, counter[protocol], getattr(self.counters, counter[protocol]) + 1)
        self._requests = self._responses = None


class _ResponseSide:
    """httptools callbacks of the server -> client direction of one connection."""

    def __init__(self, connection: HttpConnection) -> None:
        self.connection = connection
        self.exchange: Exchange | None = None
        self.first_byte_ns = 0
        self.interim = False
        self.active = True

    def on_message_begin(self) -> None:
        if not self.active:
            return
        connection = self.connection
        self.first_byte_ns = connection._now
        pending = connection._pending
        # A response that began before the oldest waiting request did answers one sent
        # before the capture could parse it (a mid-stream start): not ours to pair.
        self.exchange = pending[0] if pending and pending[0].start_ns <= self.first_byte_ns else None
        if self.exchange is None and connection._current is not None:  # answered before the body ended
            self.exchange = connection._current
        self.interim = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.exchange is not None and name.lower() == b"content-type":
            self.exchange.response_content_type = value.decode("latin-1")[:100]

    def on_headers_complete(self) -> None:
        if not self.active:
            return
        parser = self.connection._responses
        status = parser.get_status_code() if parser is not None else 0
        self.interim = 100 <= status < 200 and status != 101
        if self.exchange is not None and not self.interim:
            self.exchange.status = status
            self.exchange.response_start_ns = self.first_byte_ns
            if self.exchange.method == "HEAD":  # no body follows, whatever Content-Length says
                self._complete()
                self.connection.response_parser_reset()

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_bytes += len(body)

    def on_message_complete(self) -> None:
        if self.active and not self.interim:
            self._complete()

    def _complete(self) -> None:
        connection = self.connection
        exchange, self.exchange = self.exchange, None
        if exchange is None:
            connection.counters.unpaired_responses += 1
            return
        exchange.end_ns = connection._now
        if connection._pending and connection._pending[0] is exchange:
            connection._pending.popleft()
        elif exchange is connection._current:  # early answer: the rest of the request is not awaited
            connection._current = None
            exchange.request_end_ns = exchange.request_end_ns or connection._now
            connection._requests = None
        connection.emit(exchange)
