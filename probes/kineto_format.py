"""What a PyTorch profiler (kineto) Chrome-trace means, shared by the typed and the generic
reader of ``probes.kineto``: the categories kept, the args kept, what a copy's name tells,
and kineto's µs timestamps as integer ns."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SOURCE = "torch"
HOST_CATEGORIES = frozenset({"cpu_op", "user_annotation", "python_function", "cuda_runtime", "cuda_driver"})
DEVICE_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset", "cuda_sync", "gpu_user_annotation"})
MEMCPY = re.compile(r"Memcpy (\w+) \((\w+) -> (\w+)\)")
MEMCPY_STAGE = {"HtoD": "h2d", "DtoH": "d2h"}
ARG_KEYS = ("correlation", "stream", "device", "bytes", "External id", "Input Dims", "cuda_sync_kind",
            "grid", "block", "registers per thread", "shared memory", "est. achieved occupancy %")


class KinetoError(ValueError):
    pass


@dataclass
class KinetoTrace:
    events: pd.DataFrame
    device_properties: list[dict] = field(default_factory=list)
    process_names: dict[int, str] = field(default_factory=dict)
    thread_names: dict[tuple[int, int], str] = field(default_factory=dict)
    base_time_ns: int = 0
    parser: str = "typed"  # or "generic" when the trace did not fit the typed shape


def copy_memory(src: str, dst: str) -> str:
    """"pinned", "pageable" or "device": the host memory a copy named "Memcpy HtoD (src -> dst)" used."""
    return "pinned" if "Pinned" in (src, dst) else "pageable" if "Pageable" in (src, dst) else "device"


def us_array_to_ns(values: list | np.ndarray) -> np.ndarray:
    """µs (ints or floats) to integer ns. Whole µs convert exactly; the fraction is rounded to
    the ns (float64 holds epoch-µs values to about 0.25 µs, which bounds what survives)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.asarray([us_to_ns(v) for v in values], dtype=np.int64)
    whole = np.floor(array)
    fraction = np.subtract(array, whole)
    fraction *= 1000
    ns = whole.astype(np.int64)
    ns *= 1000
    ns += np.rint(fraction, out=fraction).astype(np.int64)  # in place: a new array costs fresh pages
    return ns


def us_to_ns(value: object) -> int:
    """µs (int, float or numeric string) to integer ns without float rounding on big values."""
    if isinstance(value, int):
        return value * 1000
    if isinstance(value, float):
        whole = int(value)
        return whole * 1000 + round((value - whole) * 1000)
    text = str(value)
    whole, _, frac = text.partition(".")
    return int(whole) * 1000 + (int((frac + "000")[:3]) if frac else 0)
