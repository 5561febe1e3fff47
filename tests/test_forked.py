"""Forked workers: each child's bytes come back; a crash, a refusal or an overrun is reported
as such, and no child outlives the block, whatever happens in the parent."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from probes.forked import ChildFailed, ChildRefused, Forked, fork_available

pytestmark = pytest.mark.skipif(not fork_available(), reason="forked workers are Linux-only")


def children() -> set[int]:
    """This process's children: other tests' servers among them, so each test compares."""
    return {child.pid for child in psutil.Process().children()}


@pytest.fixture
def no_children_left():
    before = children()
    return lambda: children() <= before


def test_every_child_returns_its_own_bytes(no_children_left) -> None:
    with Forked(lambda rank: f"{rank}:{os.getpid()};".encode() * 200_000, range(1, 4)) as children:
        results = {rank: children.result(rank, timeout_s=30) for rank in range(1, 4)}
    for rank, payload in results.items():
        pieces = set(payload.decode().split(";")[:-1])
        assert len(pieces) == 1 and len(payload) > 1 << 20  # whole (more than a pipe holds), one writer
        written_rank, writer = pieces.pop().split(":")
        assert int(written_rank) == rank and int(writer) != os.getpid()
    assert no_children_left()


def _crash(rank: int) -> bytes:
    os.kill(os.getpid(), signal.SIGKILL)
    return b"never"


def _refuse(rank: int) -> bytes:
    raise ValueError("not my shape")


def _fail(rank: int) -> bytes:
    raise RuntimeError("a bug")


@pytest.mark.parametrize("work, expected", [(_crash, ChildFailed), (_refuse, ChildRefused), (_fail, ChildFailed)])
def test_a_child_that_dies_or_refuses_is_reported_as_such(work, expected, no_children_left) -> None:
    with Forked(work, [1], refusals=(ValueError,)) as children:
        with pytest.raises(expected):
            children.result(1, timeout_s=30)
    assert no_children_left()


def test_a_child_past_its_time_is_killed_and_reported(no_children_left) -> None:
    started = time.monotonic()
    with Forked(lambda rank: time.sleep(60) or b"late", [1]) as children:
        with pytest.raises(ChildFailed, match="overran"):
            children.result(1, timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert no_children_left()


def test_children_are_reaped_when_the_parent_is_interrupted(no_children_left) -> None:
    before = children()
    with pytest.raises(KeyboardInterrupt):
        with Forked(lambda rank: time.sleep(60) or b"late", range(1, 3)):
            assert len(children() - before) == 2
            raise KeyboardInterrupt
    assert no_children_left()
