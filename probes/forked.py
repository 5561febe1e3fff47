"""Share CPU-bound parsing with forked copies of this process (Linux).

A forked child starts with the parent's memory (the text it must parse, the decoders), so
nothing is sent to it; it runs ``work(rank)`` and writes the bytes that returns to a pipe
(our own data format, never pickle), then leaves with ``os._exit``. The parent does its own
share meanwhile and reads each child's bytes afterwards.

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

REFUSED = 3  # a child's exit status when its work raised one of the refusals


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
        has not finished within ``timeout_s``)."""
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
        status = self._reap(rank, kill=False)
        if status == REFUSED:
            raise ChildRefused(f"worker {rank} refused its share")
        if status != 0:
            raise ChildFailed(f"worker {rank} ended with status {status}")
        return b"".join(chunks)

    def _reap(self, rank: int, kill: bool) -> int:
        pid, fd = self._children.pop(rank)
        os.close(fd)
        if kill:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)


def _child(work: Callable[[int], bytes], rank: int, fd: int, refusals: tuple[type[BaseException], ...],
           siblings: list[int]) -> None:
    """Runs in the child and never returns: no atexit handler, no flush of the parent's
    buffers, no exception climbing back into the parent's code."""
    status = 1
    try:
        for sibling in siblings:
            os.close(sibling)
        payload = memoryview(work(rank))
        while payload:
            payload = payload[os.write(fd, payload):]
        status = 0
    except refusals:
        status = REFUSED
    except BaseException:  # noqa: BLE001 - Ctrl-C included: the parent decides what happens
        status = 1
    finally:
        os._exit(status)
