"""Which stack-signature files a diagnosis uses, besides the packaged table: those given on the
command line, then those named in ``$PROF_SIGNATURES``. Kept apart from the attribution itself so
that checking a saved report against them loads nothing heavy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

ENV_SIGNATURES = "PROF_SIGNATURES"


def signature_files(extra: Iterable[Path | str] = ()) -> list[Path]:
    """The user's signature files in the order they are consulted: ``extra``, then
    ``$PROF_SIGNATURES``."""
    paths = [Path(p) for p in extra]
    return paths + [Path(p) for p in os.environ.get(ENV_SIGNATURES, "").split(os.pathsep) if p.strip()]
