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

    def model_for(self, meta: dict[str, Any]) -> Path | None:
        """The model to time: the policy's (``--model``), else the ONNX file ``prof attach`` found
        the server had loaded (``meta["model"]``), else None: the sample model."""
        if self.model is not None:
            return self.model
        found = discovered_onnx(meta)
        return Path(found) if found else None

    def loader(self, meta: dict[str, Any]) -> Callable[[], Any] | None:
        """A callable giving the calibration when first needed, or None when the policy is off.
        For a server prof did not start whose model is unknown, the callable raises: its gains
        must not borrow the sample ResNet-18's factors (the note says how to give the model)."""
        if self.mode == "off":
            return None
        threads = self.threads_for(meta)
        model = self.model_for(meta)
        if model is None and meta.get("target") and not meta.get("server"):
            def unknown() -> Any:
                raise LookupError(model_unknown_note(meta))

            return unknown
        if self.mode == "cached":
            def cached() -> Any:
                from profiler.analysis.calibration import SAMPLE_MODEL, cached_calibration

                found = cached_calibration(threads, model=str(model.resolve()) if model else SAMPLE_MODEL)
                if found is None:
                    name = model.name if model is not None else "the sample model"
                    raise LookupError(f"{name} is not timed on this host yet ({threads} thread(s)): `prof report "
                                      "SESSION` times it once (~30 s, then cached) and estimates the gains that "
                                      "need it")
                return found

            return cached

        def measured() -> Any:
            from profiler.analysis.calibration import load_or_calibrate

            what = f"calibrating {model or 'the sample model'} on this host ({threads} thread(s); cached afterwards)"
            with (self.status(what) if self.status else nullcontext()):
                return load_or_calibrate(threads=threads, model=model)

        return measured


def discovered_onnx(meta: dict[str, Any]) -> str | None:
    """The first ONNX file among the models found in the target process (if it still exists)."""
    for found in (meta.get("model") or {}).get("found") or []:
        if found.get("format") == "onnx" and Path(found["path"]).is_file():
            return str(found["path"])
    return None


def model_unknown_note(meta: dict[str, Any]) -> str:
    found = (meta.get("model") or {}).get("found") or []
    others = ", ".join(f"{Path(f['path']).name} ({f['format']})" for f in found)
    seen = f"found {others}, which prof cannot time (ONNX only: export it with torch.onnx.export); " if others else \
        "the server's model file was not found (command line, environment, open files, frame locals, its source); "
    return seen + "gains that need the model timed are not estimated: pass --model FILE.onnx"
