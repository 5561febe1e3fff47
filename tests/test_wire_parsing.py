"""HTTP exchanges rebuilt from byte streams (real llhttp via httptools), TCP reassembly and
the capture filter, without a network: the bytes are those a client and server exchange."""

from __future__ import annotations

import hashlib

import pytest

from probes.http.flow import Exchange, FlowCounters, HttpConnection
from probes.http.netcap import TcpStream, port_filter

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def connection(from_start: bool = True) -> tuple[HttpConnection, list[Exchange], FlowCounters]:
    out: list[Exchange] = []
    counters = FlowCounters()
    return HttpConnection(1, "127.0.0.1:5000", 8000, counters, out.append, from_start), out, counters


def post(path: str, body: bytes, request_id: str | None = None) -> bytes:
    rid = f"X-Request-ID: {request_id}\r\n".encode() if request_id else b""
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n"
            .encode() + rid + b"\r\n" + body)


def test_pipelined_keep_alive_requests_pair_with_their_responses_in_order() -> None:
    conn, out, _ = connection()
    conn.client_data(post("/a?token=secret", b"12345", "r-a") + post("/b", b"xy", "r-b"), 1_000)
    assert out == []  # nothing answered yet
    conn.server_data(OK, 2_000)
    conn.server_data(OK.replace(b"200 OK", b"404 Not Found"), 3_000)
    assert [(e.path, e.request_id, e.status, e.request_bytes) for e in out] == [
        ("/a", "r-a", 200, 5), ("/b", "r-b", 404, 2)]
    first = out[0].record()
    assert first["query"] is True and "secret" not in str(first)  # the query string is never recorded
    assert first["body_sha256"] == hashlib.sha256(b"12345").hexdigest()
    assert first["start_ns"] == 1_000 and first["response_start_ns"] == 2_000 and first["end_ns"] == 2_000


def test_chunked_body_split_across_many_segments_is_hashed_whole() -> None:
    conn, out, _ = connection()
    body = bytes(range(256)) * 40
    chunks = b"".join(b"%x\r\n" % len(body[i:i + 1000]) + body[i:i + 1000] + b"\r\n"
                      for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
    wire = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    for i in range(0, len(wire), 7):  # seven bytes a segment: boundaries fall everywhere
        conn.client_data(wire[i:i + 7], 10 + i)
    conn.server_data(OK[:20], 50_000)
    conn.server_data(OK[20:], 60_000)
    (exchange,) = out
    assert exchange.chunked and exchange.request_bytes == len(body)
    assert exchange.record()["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert exchange.request_end_ns == 10 + 7 * ((len(wire) - 1) // 7)
    assert exchange.response_start_ns == 50_000 and exchange.end_ns == 60_000


def test_a_connection_seen_mid_stream_resyncs_at_the_next_request_line() -> None:
    conn, out, counters = connection(from_start=False)
    conn.client_data(b"tail of an earlier body", 1)
    conn.server_data(OK, 2)  # answers a request the capture never saw: parsed, but paired with nothing
    conn.client_data(post("/c", b"abc"), 3)
    conn.server_data(OK, 4)
    assert [(e.path, e.status) for e in out] == [("/c", 200)]
    assert counters.skipped_bytes == len(b"tail of an earlier body") and counters.unpaired_responses == 1


def test_malformed_request_is_recorded_with_its_400_and_parsing_resumes() -> None:
    conn, out, counters = connection()
    conn.client_data(b"\x00\x01garbage that is not HTTP\r\n\r\n", 1)
    conn.server_data(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", 2)
    conn.client_data(post("/d", b"z"), 3)
    conn.server_data(OK, 4)
    assert counters.malformed_requests == 1
    assert [(e.outcome, e.status) for e in out] == [("malformed", 400), ("ok", 200)]


def test_tls_and_http2_connections_are_recognised_and_left_alone() -> None:
    tls, out, counters = connection()
    tls.client_data(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 1)
    tls.server_data(b"\x16\x03\x03\x00\x5a", 2)
    h2 = HttpConnection(2, "127.0.0.1:5001", 8000, counters, out.append, True)
    h2.client_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 1)
    assert out == [] and counters.tls_connections == 1 and counters.http2_connections == 1


def test_requests_still_waiting_when_the_connection_ends_are_kept_as_aborted() -> None:
    conn, out, _ = connection()
    conn.client_data(post("/e", b"123"), 1)
    conn.close("aborted")
    assert [(e.path, e.outcome, e.status) for e in out] == [("/e", "aborted", None)]


def test_head_response_ends_at_its_headers_whatever_content_length_says() -> None:
    conn, out, _ = connection()
    conn.client_data(b"HEAD /f HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    conn.server_data(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", 2)
    conn.client_data(post("/g", b"1"), 3)
    conn.server_data(OK, 4)
    assert [(e.method, e.path, e.status, e.response_bytes) for e in out] == [("HEAD", "/f", 200, 0),
                                                                              ("POST", "/g", 200, 2)]


def test_tcp_stream_reorders_drops_retransmissions_and_skips_a_gap_that_never_fills() -> None:
    stream = TcpStream(max_pending=2)
    assert stream.push(1000, True, b"") == ([], False)
    assert stream.push(1001, False, b"abc") == ([b"abc"], False)
    assert stream.push(1007, False, b"ghi") == ([], False)  # ahead of a missing segment: held
    assert stream.push(1004, False, b"def") == ([b"def", b"ghi"], False)
    assert stream.push(1004, False, b"defghi") == ([], False)  # a retransmission
    assert stream.push(1008, False, b"hijk") == ([b"jk"], False)  # overlap: only the new bytes
    assert stream.push(1020, False, b"x") == ([], False)
    assert stream.push(1030, False, b"y") == ([], False)
    chunks, gap = stream.push(1040, False, b"z")  # too much held: the gap is given up
    assert gap and chunks == [b"x"] and stream.gaps == 1


def test_tcp_stream_survives_sequence_wraparound() -> None:
    stream = TcpStream()
    stream.push(2**32 - 2, True, b"")
    assert stream.push(2**32 - 1, False, b"ab") == ([b"ab"], False)
    assert stream.push(1, False, b"cd") == ([b"cd"], False)


def test_port_filter_accepts_tcp_on_watched_ports_only() -> None:
    program = port_filter({8000, 9000}, loopback_ifindex=1)
    assert program[-1] == (0x06, 0, 0, 1 << 18) and all(0 <= jt <= 255 and 0 <= jf <= 255
                                                        for _, jt, jf, _ in program)
    ports = {k for code, _, _, k in program if code == 0x15 and k in (8000, 9000)}
    assert ports == {8000, 9000}
    # simulate the program on a hand-made IPv4/TCP packet, to 8000 and to 8001
    assert run_bpf(program, ipv4_tcp(dport=8000)) > 0
    assert run_bpf(program, ipv4_tcp(dport=8001)) == 0
    assert run_bpf(program, ipv4_tcp(dport=8001, sport=9000)) > 0
    assert run_bpf(program, ipv4_tcp(dport=8000, protocol=17)) == 0  # UDP
    assert run_bpf(program, ipv4_tcp(dport=8000), outgoing_on=1) == 0  # loopback's duplicate copy
    assert run_bpf(program, ipv4_tcp(dport=8000, data=b"")) == 0  # a bare ACK
    assert run_bpf(program, ipv4_tcp(dport=8000, data=b"", flags=0x02)) > 0  # SYN
    assert run_bpf(program, ipv4_tcp(dport=8000, data=b"", flags=0x11)) > 0  # FIN+ACK
    assert run_bpf(program, ipv6_tcp(dport=9000)) > 0
    assert run_bpf(program, ipv6_tcp(dport=9000, data=b"")) == 0
    assert run_bpf(program, ipv6_tcp(dport=9001)) == 0


def ipv6_tcp(dport: int, data: bytes = b"hello") -> bytes:
    import dpkt

    tcp = dpkt.tcp.TCP(sport=40000, dport=dport, seq=1, flags=0x10, data=data)
    ip = dpkt.ip6.IP6(src=b"\x00" * 15 + b"\x01", dst=b"\x00" * 15 + b"\x01", nxt=6, hlim=64, data=tcp)
    ip.plen = len(bytes(tcp))
    return bytes(ip)


def ipv4_tcp(dport: int, sport: int = 40000, protocol: int = 6, data: bytes = b"hello", flags: int = 0x10) -> bytes:
    import dpkt

    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=1, flags=flags, data=data)
    ip = dpkt.ip.IP(src=b"\x7f\x00\x00\x01", dst=b"\x7f\x00\x00\x01", p=protocol, data=tcp)
    ip.len = len(bytes(ip))
    return bytes(ip)


def run_bpf(program: list[tuple[int, int, int, int]], packet: bytes, outgoing_on: int | None = None) -> int:
    """A tiny interpreter of the instructions port_filter emits, to check its logic here."""
    a = x = pc = 0
    memory = [0] * 16
    loads = {0x30: 1, 0x28: 2, 0x50: -1, 0x48: -2}  # size; negative: indexed by X
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x20:  # ld ancillary word
            a = (4 if outgoing_on is not None else 0) if k == 0xFFFFF004 else (outgoing_on or 0)
        elif code in loads:
            size, at = abs(loads[code]), k + (x if loads[code] < 0 else 0)
            a = int.from_bytes(packet[at:at + size], "big")
        elif code == 0xB1:
            x = 4 * (packet[k] & 0xF)
        elif code == 0x74:
            a >>= k
        elif code == 0x54:
            a &= k
        elif code == 0x0C:
            a += x
        elif code == 0x02:
            memory[k] = a
        elif code == 0x61:
            x = memory[k]
        elif code in (0x15, 0x45, 0x2D):
            taken = a == k if code == 0x15 else bool(a & k) if code == 0x45 else a > x
            pc += jt if taken else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def test_samples_are_tied_to_requests_by_time_then_through_their_threads_connection() -> None:
    """Generated events: two keep-alive connections, each served by its own thread. Where one
    request is in flight, time alone ties a sample; the thread it ties then stands for its
    connection while both are in flight."""
    import orjson

    from profiler.timeline import make_events, merge_events
    from profiler.measures.wire import requests_of_samples

    ms = 1_000_000
    wire = [("a-0", 1, 0, 100), ("b-0", 2, 60, 180), ("a-1", 1, 110, 200), ("b-1", 2, 190, 300)]
    http = make_events(ts_ns=[s * ms for _, _, s, _ in wire], source="http", kind="span", name="POST /x",
                       dur_ns=[(e - s) * ms for _, _, s, e in wire], request_id=[r for r, *_ in wire],
                       args=[orjson.dumps({"conn": c, "status": 200, "request_bytes": 1}).decode() for _, c, _, _ in wire])
    # thread 11 serves connection 1, thread 22 connection 2: a sample every 10 ms while working
    starts = [t for t in range(0, 100, 10)] + [t for t in range(110, 200, 10)]
    starts_b = [t for t in range(60, 180, 10)] + [t for t in range(190, 300, 10)]
    pyspy = make_events(ts_ns=[t * ms for t in starts + starts_b], source="pyspy", kind="sample", name="work",
                        dur_ns=9 * ms, tid=[11] * len(starts) + [22] * len(starts_b))
    timeline = merge_events([http, pyspy])
    served = requests_of_samples(timeline)
    samples = timeline.loc[served.index]
    expected = []
    for tid, t in zip(samples["tid"], samples["ts_ns"] // ms + 4):
        conn = 1 if tid == 11 else 2
        expected.append(next(r for r, c, s, e in wire if c == conn and s <= t <= e))
    assert list(served) == expected  # every sample, including those while both were in flight
    alone_only = requests_of_samples(timeline.assign(tid=timeline["tid"].where(timeline["source"] != "pyspy", -1)))
    assert alone_only.notna().sum() < len(served)  # without threads, overlap stays unknown


@pytest.mark.slow
def test_rate_series_counts_arrivals_completions_and_time_weighted_in_flight() -> None:
    import pandas as pd

    from profiler.measures.wire import in_flight_series, rate_series

    s = 1_000_000_000
    requests = pd.DataFrame({"start_ns": [0, s // 2, s + s // 4], "end_ns": [s // 2, s + s // 2, s + s // 2]})
    series = rate_series(requests, bin_ns=s)
    assert list(series["arrivals_per_s"]) == [2, 1] and list(series["completions_per_s"]) == [1, 2]
    # bin 0: request 1 for 0.5 s, request 2 for 0.5 s; bin 1: request 2 for 0.5 s, request 3 for 0.25 s
    assert list(series["in_flight_mean"]) == [1.0, 0.75]
    flight = in_flight_series(requests)
    assert flight["in_flight"].max() == 2 and flight["in_flight"].iloc[-1] == 0
