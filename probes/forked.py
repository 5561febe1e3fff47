"""Share CPU-bound parsing with forked copies of this process (Linux).

A forked child starts with the parent's memory (the text it must parse, the decoders), so
nothing is sent to it; it runs ``work(rank)`` and writes the bytes that returns to a pipe
(our own data format, never pickle) behind a header of its outcome and their length, closes
the pipe, then leaves with ``os._exit``. The parent does its own share meanwhile and reads
each child's bytes afterwards: a whole message is the child's word, so the parent need not
wait for the exit (tearing down a copy of a big process takes milliseconds) before using it.

A child runs only our parsing code, no thread and no I/O of the parent's, which is why
forking a process that has library threads (BLAS, Arrow) is safe here; Python 3.12 warns of
such forks in general, and the warning is silenced for this one call.

Nothing is lost to a child: one that crashes, is killed or overruns its time is reported
as ``ChildFailed`` and the caller does that share itself; one whose work raised one of the
caller's ``refusals`` (the data does not fit the fast path) is ``ChildRefused``.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
import warnings
from typing import Callable, Iterable

DONE, REFUSED = b"D", b"R"  # the outcome that opens a child's message
_HEADER = 9  # the outcome, then the length of the bytes that follow (8 bytes, little-endian)


class ChildFailed(Exception):
    """The child gave no result: crashed, killed, or past its time."""


class ChildRefused(Exception):
    """The child's work raised one of the refusals it was given."""


def fork_available() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Forked:
    """Children running ``work(rank)`` for each of ``ranks``; use as a context manager, so
    that every child is reaped (killed first if still running) whatever happens."""

    def __init__(self, work: Callable[[int], bytes], ranks: Iterable[int],
                 refusals: tuple[type[BaseException], ...] = ()) -> None:
        self._children: dict[int, tuple[int, int]] = {}  # rank -> (pid, read end of its pipe)
        for rank in ranks:
            read_fd, write_fd = os.pipe()
            _widen(write_fd)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "multi-threaded ... fork()"
                pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                _child(work, rank, write_fd, refusals, [fd for _, fd in self._children.values()])
            os.close(write_fd)
            self._children[rank] = (pid, read_fd)

    def __enter__(self) -> Forked:
        return self

    def __exit__(self, *exc: object) -> None:
        for rank in list(self._children):
            self._reap(rank, kill=True)

    def result(self, rank: int, timeout_s: float) -> bytes:
        """The bytes child ``rank`` returned; raises ChildRefused, or ChildFailed (also when it
        has not finished within ``timeout_s``). The child is reaped later, on leaving the block."""
        _, fd = self._children[rank]
        chunks, deadline = [], time.monotonic() + timeout_s
        while True:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                self._reap(rank, kill=True)
                raise ChildFailed(f"worker {rank} overran {timeout_s:.0f} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        message = b"".join(chunks)
        outcome, length = message[:1], int.from_bytes(message[1:_HEADER], "little")
        if outcome == REFUSED:
            raise ChildRefused(f"worker {rank} refused its share")
        if outcome != DONE or len(message) != _HEADER + length:
            status = self._reap(rank, kill=False)
            raise ChildFailed(f"worker {rank} ended with status {status} before its whole result")
        return message[_HEADER:]

    def _reap(self, rank: int, kill: bool) -> int:
        pid, fd = self._children.pop(rank)
        try:
            os.close(fd)
        except OSError:
            pass
        if kill:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)


def _widen(fd: int) -> None:
    """A 1 MiB pipe (Linux's default most for one), not 64 KiB: a result of megabytes then
    crosses in a few hand-offs between the two processes, not hundreds."""
    try:
        import fcntl  # POSIX only; forking is Linux-only anyway

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):  # not Linux, or over this system's limit: the default serves
        pass


def _child(work: Callable[[int], bytes], rank: int, fd: int, refusals: tuple[type[BaseException], ...],
           siblings: list[int]) -> None:
    """Runs in the child and never returns: no atexit handler, no flush of the parent's
    buffers, no exception climbing back into the parent's code."""
    status = 1
    try:
        for sibling in siblings:
            os.close(sibling)
        try:
            payload = memoryview(work(rank))
            message = [DONE + len(payload).to_bytes(8, "little"), payload]
        except refusals:
            message = [REFUSED + bytes(8)]
        for part in message:
            part = memoryview(part)
            while part:
                part = part[os.write(fd, part):]
        os.close(fd)  # the parent's end reads EOF now, not after this copy is torn down
        status = 0
    except BaseException:  # noqa: BLE001 - Ctrl-C included: status 1, the parent decides what happens
        pass
    finally:
        os._exit(status)
