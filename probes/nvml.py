"""NVML sampler: GPU utilization, memory, power, SM clock and PCIe traffic, per device and
per target process, through ``pynvml`` (nvidia-ml-py).

On a machine without an NVIDIA driver ``nvmlInit`` raises ``NVMLError_LibraryNotFound`` (or
``DriverNotLoaded``); the probe is then off and says so in one line. A metric a device does
not support is skipped for that device, not fatal.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from probes.protocol import ProbeUnavailable, Target
from profiler.timeline import gpu_pid, make_events, merge_events

SOURCE = "nvml"
FILE = "nvml.jsonl"
NO_DRIVER = "no NVIDIA driver: GPU probes off"


def load_nvml(module: ModuleType | Any | None = None) -> tuple[Any | None, str | None]:
    """Initialise NVML. Returns (module, None) when it works, (None, reason) when not.

    ``module`` lets tests pass an NVML stand-in; by default the real ``pynvml`` is used.
    """
    if module is None:
        try:
            import pynvml as module  # type: ignore[no-redef]
        except ImportError:
            return None, "nvidia-ml-py is not installed: GPU probes off"
    try:
        module.nvmlInit()
    except module.NVMLError as exc:
        if isinstance(exc, (module.NVMLError_LibraryNotFound, module.NVMLError_DriverNotLoaded)):
            return None, NO_DRIVER
        return None, f"NVML failed to start ({exc}): GPU probes off"
    return module, None


def _read(nvml: Any, call: str, *args: Any) -> Any:
    try:
        return getattr(nvml, call)(*args)
    except nvml.NVMLError:
        return None


def read_device(nvml: Any, index: int, pids: set[int], last_seen_us: int) -> dict:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    row: dict[str, Any] = {"device": index}
    rates = _read(nvml, "nvmlDeviceGetUtilizationRates", handle)
    if rates is not None:
        row["gpu_util"], row["mem_util"] = rates.gpu, rates.memory
    memory = _read(nvml, "nvmlDeviceGetMemoryInfo", handle)
    if memory is not None:
        row["mem_used"] = memory.used
    power = _read(nvml, "nvmlDeviceGetPowerUsage", handle)
    if power is not None:
        row["power_w"] = power / 1000.0
    clock = _read(nvml, "nvmlDeviceGetClockInfo", handle, nvml.NVML_CLOCK_SM)
    if clock is not None:
        row["sm_clock_mhz"] = clock
    for key, counter in (("pcie_tx_kbps", nvml.NVML_PCIE_UTIL_TX_BYTES), ("pcie_rx_kbps", nvml.NVML_PCIE_UTIL_RX_BYTES)):
        value = _read(nvml, "nvmlDeviceGetPcieThroughput", handle, counter)
        if value is not None:
            row[key] = value
    samples = _read(nvml, "nvmlDeviceGetProcessUtilization", handle, last_seen_us) or []
    row["processes"] = [{"pid": s.pid, "sm_util": s.smUtil, "mem_util": s.memUtil, "t_us": s.timeStamp}
                        for s in samples if not pids or s.pid in pids]
    running = _read(nvml, "nvmlDeviceGetComputeRunningProcesses", handle) or []
    row["process_memory"] = {str(p.pid): p.usedGpuMemory for p in running if not pids or p.pid in pids}
    return row


@dataclass
class NvmlSampler:
    out_dir: Path
    pids: set[int] = field(default_factory=set)
    interval_s: float = 0.1
    nvml_module: Any | None = None
    reason_off: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        return self.out_dir / FILE

    def start(self) -> bool:
        """Start sampling; False (with ``reason_off``) when NVML is unavailable."""
        nvml, reason = load_nvml(self.nvml_module)
        if nvml is None:
            self.reason_off = reason
            return False
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, args=(nvml,), name="prof-nvml-sampler", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> Path | None:
        self._stop.set()
        if self._thread is None:
            return None
        self._thread.join()
        return self.path

    def _run(self, nvml: Any) -> None:
        count = nvml.nvmlDeviceGetCount()
        last_seen = [0] * count
        try:
            with open(self.path, "a") as out:
                while not self._stop.is_set():
                    started = time.perf_counter()
                    now = time.time_ns()
                    for index in range(count):
                        row = read_device(nvml, index, self.pids, last_seen[index])
                        if row["processes"]:
                            last_seen[index] = max(p["t_us"] for p in row["processes"])
                        row["t"] = now
                        out.write(json.dumps(row, separators=(",", ":")) + "\n")
                    out.flush()
                    self._stop.wait(max(0.0, self.interval_s - (time.perf_counter() - started)))
        finally:
            nvml.nvmlShutdown()


_DEVICE_COUNTERS = ("gpu_util", "mem_util", "mem_used", "power_w", "sm_clock_mhz", "pcie_tx_kbps", "pcie_rx_kbps")


def ingest_nvml(path: Path | str) -> pd.DataFrame:
    """Counter events per device (``pid = gpu_pid(device)``) and per target process."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    frames = []
    for key in _DEVICE_COUNTERS:
        points = [(r["t"], r["device"], r[key]) for r in rows if key in r]
        if points:
            ts, dev, val = (np.asarray(x) for x in zip(*points))
            frames.append(make_events(ts_ns=ts.astype(np.int64), source=SOURCE, kind="counter", name=f"gpu.{key}",
                                      pid=np.asarray([gpu_pid(d) for d in dev]), value=val.astype(float)))
    per_process = [(p["t_us"] * 1000, p["pid"], p["sm_util"], r["device"]) for r in rows for p in r["processes"]]
    if per_process:
        ts, pid, util, dev = (np.asarray(x) for x in zip(*per_process))
        frames.append(make_events(ts_ns=ts.astype(np.int64), source=SOURCE, kind="counter", name="gpu.process_sm_util",
                                  pid=pid.astype(np.int64), value=util.astype(float),
                                  args=[json.dumps({"device": int(d)}) for d in dev]))
    return merge_events(frames)


@dataclass
class NvmlProbe:
    """The ``nvml`` probe (:class:`probes.protocol.Probe`): off with the driver's reason where
    there is no NVIDIA GPU."""

    sampler: NvmlSampler

    @classmethod
    def for_target(cls, target: Target) -> NvmlProbe:
        return cls(NvmlSampler(target.raw_dir("nvml"), pids={target.pid, *target.family},
                               interval_s=target.interval_s))

    def start(self) -> dict:
        if not self.sampler.start():
            raise ProbeUnavailable(self.sampler.reason_off or "NVML unavailable")
        return {"interval_s": self.sampler.interval_s}

    def stop(self) -> tuple[dict, list[str]]:
        self.sampler.stop()
        return {}, [f"nvml: {e}" for e in getattr(self.sampler, "errors", [])]
