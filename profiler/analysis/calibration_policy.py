"""When a diagnosis may time the model on this host, and at which thread count: one policy for
``prof report``, ``prof verify``, ``prof tui`` and the diagnosis at the end of a run.

- ``measure``: use this host's cached calibration, measuring it first when there is none
  (~30 s, once per host, model and thread count);
- ``cached``: use the cached calibration if there is one, never measure (the end of a run, the
  viewer: they must not stall);
- ``off``: no calibration; gains that need a model factor are left out.

``host_timings`` allows the small timings a rule may need besides (a JPEG decode at full and
reduced scale, about a second); ``--no-calibration`` turns them off too. The calibration is
only loaded when a rule with evidence to judge asks for it.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

Mode = Literal["measure", "cached", "off"]


@dataclass(frozen=True)
class CalibrationPolicy:
    mode: Mode = "cached"
    threads: int | None = None  # None: the server's own intra-op threads (see threads_for)
    model: Path | None = None  # the user's ONNX model instead of the sample ResNet-18
    host_timings: bool = True
    # Wraps a measurement (the CLI shows a spinner); called with what is being measured.
    status: Callable[[str], AbstractContextManager[Any]] | None = None

    @classmethod
    def off(cls) -> CalibrationPolicy:
        return cls("off", host_timings=False)

    def threads_for(self, meta: dict[str, Any]) -> int:
        """The thread count to calibrate at: the policy's, else the sample server's own intra-op
        threads (its default, 0, is one per core), else 1 for a server prof did not write."""
        if self.threads is not None:
            return self.threads
        server = meta.get("server")
        knobs = list((server or {}).get("knobs") or [])
        if "--intra-op-threads" in knobs:
            chosen = int(knobs[knobs.index("--intra-op-threads") + 1])
            if chosen:
                return chosen
        return (os.cpu_count() or 1) if server else 1

    def loader(self, meta: dict[str, Any]) -> Callable[[], Any] | None:
        """A callable giving the calibration when first needed, or None when the policy is off."""
        if self.mode == "off":
            return None
        threads = self.threads_for(meta)
        if self.mode == "cached":
            def cached() -> Any:
                from profiler.analysis.calibration import SAMPLE_MODEL, cached_calibration

                return cached_calibration(threads, model=str(self.model.resolve()) if self.model else SAMPLE_MODEL)

            return cached

        def measured() -> Any:
            from profiler.analysis.calibration import load_or_calibrate

            what = f"calibrating {self.model or 'the sample model'} on this host ({threads} thread(s); cached afterwards)"
            with (self.status(what) if self.status else nullcontext()):
                return load_or_calibrate(threads=threads, model=self.model)

        return measured
