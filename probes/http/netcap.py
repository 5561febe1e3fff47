"""Passive packet capture for the ``http`` probe: a Linux packet socket, a kernel filter for
the target's ports, kernel timestamps, drop counters, and TCP stream reassembly.

Why a packet socket and not libpcap or tshark: it is in the standard library, needs nothing
installed beyond CAP_NET_RAW, and gives what we need directly — ``SO_TIMESTAMPNS`` receive
times on the realtime clock (the session's one clock), ``PACKET_STATISTICS`` drop counts,
and a classic BPF filter so the kernel hands us only TCP segments of the watched ports.
Header decoding is dpkt's; HTTP parsing is llhttp's (see ``probes.http.flow``).

The socket is "cooked" (``SOCK_DGRAM``): packets arrive from the IP header on, whatever the
link layer, so one socket covers loopback and every other interface. On loopback the kernel
shows each packet twice (as sent and as received); the filter drops the "sent" copy there.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Iterable

import dpkt
import psutil

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
PACKET_OUTGOING = 4
SNAP_BYTES = 1 << 18  # loopback GSO segments reach 64 KiB; leave room
RECEIVE_BUFFER = 32 << 20
_SEQ_MOD = 1 << 32

# Classic BPF opcodes (linux/filter.h) and the ancillary offsets for packet type / ifindex.
_LDB, _LDH, _LDW_ABS, _LDH_IND, _LDXB_MSH = 0x30, 0x28, 0x20, 0x48, 0xB1
_LDB_IND, _LDX_MEM, _ST = 0x50, 0x61, 0x02
_RSH, _AND, _ADD_X, _JEQ, _JSET, _JGT_X, _RET = 0x74, 0x54, 0x0C, 0x15, 0x45, 0x2D, 0x06
_AD_PKTTYPE, _AD_IFINDEX = 0xFFFFF004, 0xFFFFF008


class CaptureError(RuntimeError):
    """The capture cannot run; the message is one line with the reason and the remedy."""


def capture_permission_problem() -> str | None:
    """Why this process cannot open a packet socket, or None when it can."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL)).close()
    except PermissionError:
        return ("needs CAP_NET_RAW to capture packets (run prof as root, or grant it: "
                "sudo setcap cap_net_raw+ep $(readlink -f $(which python3)))")
    except (OSError, AttributeError) as exc:
        return f"packet capture unavailable on this system ({exc})"
    return None


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process and its children listen on."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return set()
    ports: set[int] = set()
    for process in family:
        try:
            ports.update(c.laddr.port for c in process.net_connections(kind="tcp")
                         if c.status == psutil.CONN_LISTEN)
        except psutil.Error:
            continue
    return ports


def port_filter(ports: Iterable[int], loopback_ifindex: int) -> list[tuple[int, int, int, int]]:
    """A classic BPF program accepting TCP segments (IPv4 unfragmented, or IPv6 with TCP as
    the next header) from or to any of ``ports`` that carry data or open/close a connection;
    bare acknowledgements (half the packets of a busy connection) and loopback's duplicate
    sent copies stay in the kernel. Instructions are (code, jump-if-true, jump-if-false, k);
    jumps are resolved from labels."""
    ports = sorted(set(ports))
    program: list[tuple[int | str, object, object, int]] = [
        (_LDW_ABS, 0, 0, _AD_PKTTYPE), (_JEQ, "out", "ip", PACKET_OUTGOING),
        ("out", None, None, 0), (_LDW_ABS, 0, 0, _AD_IFINDEX), (_JEQ, "reject", "ip", loopback_ifindex),
        ("ip", None, None, 0), (_LDB, 0, 0, 0), (_RSH, 0, 0, 4), (_JEQ, "v4", "v6?", 4),
        ("v6?", None, None, 0), (_JEQ, "v6", "reject", 6),
        ("v4", None, None, 0), (_LDB, 0, 0, 9), (_JEQ, "v4tcp", "reject", 6),
        ("v4tcp", None, None, 0), (_LDH, 0, 0, 6), (_JSET, "reject", "v4ports", 0x1FFF),
        ("v4ports", None, None, 0), (_LDXB_MSH, 0, 0, 0),
        *_match_ports(_LDH_IND, 0, ports, "v4data"), *_match_ports(_LDH_IND, 2, ports, "v4data"), (_RET, 0, 0, 0),
        # IPv4: keep SYN/FIN/RST, else only if total length > IP header + TCP header
        ("v4data", None, None, 0), (_LDB_IND, 0, 0, 13), (_JSET, "accept", 0, 0x07),
        (_LDB_IND, 0, 0, 12), (_AND, 0, 0, 0xF0), (_RSH, 0, 0, 2), (_ADD_X, 0, 0, 0), (_ST, 0, 0, 0),
        (_LDH, 0, 0, 2), (_JEQ, "accept", 0, 0),  # 0: a segmentation-offload giant; let it through
        (_LDX_MEM, 0, 0, 0), (_JGT_X, "accept", "reject", 0),
        ("v6", None, None, 0), (_LDB, 0, 0, 6), (_JEQ, "v6tcp", "reject", 6),
        ("v6tcp", None, None, 0), *_match_ports(_LDH, 40, ports, "v6data"),
        *_match_ports(_LDH, 42, ports, "v6data"), (_RET, 0, 0, 0),
        # IPv6: payload length counts the TCP header, not the fixed 40-byte IPv6 header
        ("v6data", None, None, 0), (_LDB, 0, 0, 53), (_JSET, "accept", 0, 0x07),
        (_LDB, 0, 0, 52), (_AND, 0, 0, 0xF0), (_RSH, 0, 0, 2), (_ST, 0, 0, 0),
        (_LDH, 0, 0, 4), (_LDX_MEM, 0, 0, 0), (_JGT_X, "accept", "reject", 0),
        ("reject", None, None, 0), (_RET, 0, 0, 0),
        ("accept", None, None, 0), (_RET, 0, 0, SNAP_BYTES),
    ]
    return _resolve(program)


def _match_ports(load: int, offset: int, ports: list[int], target: str) -> list[tuple[int, object, object, int]]:
    out: list[tuple[int, object, object, int]] = [(load, 0, 0, offset)]
    out += [(_JEQ, target, 0, port) for port in ports]
    return out


def _resolve(program: list[tuple[int | str, object, object, int]]) -> list[tuple[int, int, int, int]]:
    labels, code = {}, []
    for item in program:
        if isinstance(item[0], str):
            labels[item[0]] = len(code)
        else:
            code.append(item)

    def offset(target: object, at: int) -> int:
        if isinstance(target, int):
            return target
        jump = labels[target] - at - 1
        if not 0 <= jump <= 255:
            raise CaptureError("too many ports for the capture filter")
        return jump

    return [(c, offset(jt, i), offset(jf, i), k) for i, (c, jt, jf, k) in enumerate(code)]


@dataclass(frozen=True)
class Segment:
    """One TCP segment: addresses as text, the flags that matter, and its payload."""

    ts_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    syn: bool
    fin: bool
    rst: bool
    payload: bytes


def decode_segment(data: bytes, ts_ns: int) -> Segment | None:
    """A TCP segment from a cooked packet (IP header first), or None if it is not one."""
    try:
        if data[0] >> 4 == 4:
            packet = dpkt.ip.IP(data)
            src, dst = socket.inet_ntop(socket.AF_INET, packet.src), socket.inet_ntop(socket.AF_INET, packet.dst)
        else:
            packet = dpkt.ip6.IP6(data)
            src, dst = socket.inet_ntop(socket.AF_INET6, packet.src), socket.inet_ntop(socket.AF_INET6, packet.dst)
    except (dpkt.UnpackError, IndexError, ValueError):
        return None
    tcp = packet.data
    if not isinstance(tcp, dpkt.tcp.TCP):
        return None
    flags = tcp.flags
    return Segment(ts_ns, src, tcp.sport, dst, tcp.dport, tcp.seq, bool(flags & dpkt.tcp.TH_SYN),
                   bool(flags & dpkt.tcp.TH_FIN), bool(flags & dpkt.tcp.TH_RST), bytes(tcp.data))


@dataclass
class PacketSocket:
    """A packet socket filtered to TCP on ``ports``, with kernel receive timestamps."""

    ports: set[int]
    timeout_s: float = 0.2
    receive_buffer: int = RECEIVE_BUFFER
    packets: int = 0
    drops: int = 0
    _sock: socket.socket | None = None
    _buffer: bytearray = field(default_factory=lambda: bytearray(SNAP_BYTES))

    def __post_init__(self) -> None:
        self._view = memoryview(self._buffer)

    def open(self) -> None:
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise CaptureError(capture_permission_problem() or "packet socket denied") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.receive_buffer)
        except OSError:  # without CAP_NET_ADMIN: the ordinary limit (net.core.rmem_max)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock = sock
        self.set_timeout()
        self.set_ports(self.ports)
        self.statistics()  # the counters start at the filter, not at socket creation

    def set_timeout(self) -> None:
        if self._sock is not None:
            self._sock.settimeout(self.timeout_s)

    def set_ports(self, ports: set[int]) -> None:
        """Replace the kernel filter (atomic: no packet sees a half-installed one)."""
        assert self._sock is not None
        self.ports = set(ports)
        instructions = port_filter(self.ports, socket.if_nametoindex("lo"))
        program = b"".join(struct.pack("HBBI", *ins) for ins in instructions)
        buffer = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(instructions), ctypes.addressof(buffer))
        self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def receive(self) -> tuple[int, bytes] | None:
        """(kernel receive time in epoch ns, packet) or None after ``timeout_s`` of silence."""
        assert self._sock is not None
        try:
            # Into one reused buffer: a fresh 256 KiB bytes per packet (recvmsg) costs an
            # mmap and page faults each time, more than the rest of the packet's handling.
            size, ancillary, _flags, _address = self._sock.recvmsg_into([self._buffer], 64)
        except socket.timeout:
            return None
        data = bytes(self._view[:size])
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanos = struct.unpack_from("qq", value)
                return seconds * 1_000_000_000 + nanos, data
        return time.time_ns(), data

    def statistics(self) -> tuple[int, int]:
        """Accumulated (packets passed by the filter, packets dropped for want of buffer)."""
        if self._sock is not None:
            packets, drops = struct.unpack("II", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            self.packets += packets  # the kernel resets its counters on each read
            self.drops += drops
        return self.packets, self.drops

    def close(self) -> None:
        if self._sock is not None:
            self.statistics()
            self._sock.close()
            self._sock = None


@dataclass
class TcpStream:
    """One direction of a TCP connection, reassembled in sequence order. Retransmitted bytes
    are dropped; out-of-order segments wait (bounded) for the gap to fill; a gap that never
    fills (the capture dropped packets) is skipped and reported to the caller."""

    max_pending: int = 256
    next_seq: int | None = None
    gaps: int = 0
    _pending: dict[int, bytes] = field(default_factory=dict)

    def push(self, seq: int, syn: bool, payload: bytes) -> tuple[list[bytes], bool]:
        """In-order bytes this segment releases, and whether a gap was skipped first."""
        if syn:
            self.next_seq = (seq + 1) % _SEQ_MOD
            self._pending.clear()
            seq = self.next_seq
        if not payload:
            return [], False
        if self.next_seq is None:  # first sight of a stream already under way
            self.next_seq = seq
        ahead = (seq - self.next_seq) % _SEQ_MOD
        if ahead >= _SEQ_MOD // 2:  # starts before what we have: a retransmission or overlap
            overlap = (self.next_seq - seq) % _SEQ_MOD
            if overlap >= len(payload):
                return [], False
            payload, ahead = payload[overlap:], 0
        if ahead:
            self._pending[seq] = payload
            if len(self._pending) <= self.max_pending:
                return [], False
            self.gaps += 1  # the missing bytes are not coming: resume at the earliest held segment
            self.next_seq = min(self._pending, key=lambda s: (s - self.next_seq) % _SEQ_MOD)  # type: ignore
            return self._drain([]), True
        self.next_seq = (seq + len(payload)) % _SEQ_MOD
        return self._drain([payload]), False

    def _drain(self, out: list[bytes]) -> list[bytes]:
        while self.next_seq in self._pending:
            chunk = self._pending.pop(self.next_seq)
            out.append(chunk)
            self.next_seq = (self.next_seq + len(chunk)) % _SEQ_MOD  # type: ignore[operator]
        return out
