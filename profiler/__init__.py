"""prof: find out why an image-classification server is slow.

Public Python API::

    import profiler
    session = profiler.load("prof-out/session-...")
    session.timeline            # pandas DataFrame, one row per event (profiler.timeline schema)
"""

from __future__ import annotations

from typing import Any

__all__ = ["load", "Session"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `prof --help` does not pay for importing pandas.
    if name in __all__:
        from profiler import session

        return {"load": session.load, "Session": session.Session}[name]
    raise AttributeError(name)
