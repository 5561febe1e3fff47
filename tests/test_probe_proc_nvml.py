from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from probes.nvml import NO_DRIVER, NvmlSampler, ingest_nvml, load_nvml
from probes.proc import ProcSampler, ingest_proc
from profiler.timeline import gpu_pid, validate

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs

BURN = "import threading, time\nt = time.time() + 1.5\nwhile time.time() < t: pass\ntime.sleep(30)\n"


def test_proc_sampler_sees_a_busy_process_and_its_child(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time\n"
                               f"subprocess.Popen([sys.executable, '-c', {BURN!r}])\n"
                               "time.sleep(30)\n"])
    try:
        time.sleep(0.5)
        sampler = ProcSampler(parent.pid, tmp_path, interval_s=0.1)
        sampler.start()
        time.sleep(1.2)
        events = ingest_proc(sampler.stop())
    finally:
        parent.kill()
        parent.wait()
    validate(events)
    cpu = events[events["name"] == "cpu_percent"]
    pids = set(cpu["pid"])
    assert parent.pid in pids and len(pids) == 2
    child = max(pids - {parent.pid})
    assert cpu[cpu["pid"] == child]["value"].median() > 50  # the child burns a core
    assert cpu[cpu["pid"] == parent.pid]["value"].median() < 20
    assert (events[events["name"] == "rss_bytes"]["value"] > 1e6).all()
    assert not events[events["name"] == "uss_bytes"].empty
    per_thread = events[events["name"] == "thread_cpu_percent"]
    assert child in set(per_thread["tid"])  # the child's main thread has tid == pid


def test_proc_sampler_refuses_a_dead_pid(tmp_path: Path) -> None:
    import psutil

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    with pytest.raises(psutil.NoSuchProcess):
        ProcSampler(process.pid, tmp_path).start()


def test_real_nvml_here_reports_no_driver(tmp_path: Path) -> None:
    nvml, reason = load_nvml()
    if nvml is not None:  # a machine with a GPU: the real sampler must produce device counters
        sampler = NvmlSampler(tmp_path, interval_s=0.05)
        assert sampler.start()
        time.sleep(0.3)
        events = ingest_nvml(sampler.stop())
        assert (events["name"] == "gpu.gpu_util").any()
        return
    assert reason == NO_DRIVER
    sampler = NvmlSampler(tmp_path)
    assert sampler.start() is False and sampler.reason_off == NO_DRIVER


class NvmlStandIn:
    """An NVML stand-in for GPU-less tests: the pynvml functions the sampler calls, with
    two fake devices. Only the device is fake; the sampler code is the shipped one."""

    NVML_CLOCK_SM = 1
    NVML_PCIE_UTIL_TX_BYTES = 0
    NVML_PCIE_UTIL_RX_BYTES = 1

    class NVMLError(Exception):
        pass

    class NVMLError_LibraryNotFound(NVMLError):
        pass

    class NVMLError_DriverNotLoaded(NVMLError):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    def __init__(self, target_pid: int) -> None:
        self.target_pid = target_pid
        self.shutdown = False

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int):
        return SimpleNamespace(gpu=40 + handle, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: int):
        return SimpleNamespace(used=2**30, total=2**34)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if handle == 1:
            raise self.NVMLError_NotSupported()
        return 150_000

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        return 1410

    def nvmlDeviceGetPcieThroughput(self, handle: int, counter: int) -> int:
        return 1000 + counter

    def nvmlDeviceGetProcessUtilization(self, handle: int, last_seen: int):
        now = time.time_ns() // 1000
        return [SimpleNamespace(pid=self.target_pid, smUtil=33, memUtil=5, timeStamp=now),
                SimpleNamespace(pid=1, smUtil=90, memUtil=9, timeStamp=now)]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int):
        return [SimpleNamespace(pid=self.target_pid, usedGpuMemory=5 * 2**20)]


def test_sampler_with_the_nvml_stand_in_records_devices_and_target_processes(tmp_path: Path) -> None:
    stand_in = NvmlStandIn(target_pid=4242)
    sampler = NvmlSampler(tmp_path, pids={4242}, interval_s=0.02, nvml_module=stand_in)
    assert sampler.start()
    time.sleep(0.2)
    events = ingest_nvml(sampler.stop())
    validate(events)
    assert stand_in.shutdown
    util = events[events["name"] == "gpu.gpu_util"]
    assert set(util["pid"]) == {gpu_pid(0), gpu_pid(1)}
    assert set(util[util["pid"] == gpu_pid(1)]["value"]) == {41.0}
    power = events[events["name"] == "gpu.power_w"]
    assert set(power["pid"]) == {gpu_pid(0)} and set(power["value"]) == {150.0}  # device 1: not supported
    processes = events[events["name"] == "gpu.process_sm_util"]
    assert set(processes["pid"]) == {4242} and set(processes["value"]) == {33.0}


def test_stand_in_without_driver_is_reported_off(tmp_path: Path) -> None:
    class NoDriver(NvmlStandIn):
        def nvmlInit(self) -> None:
            raise self.NVMLError_DriverNotLoaded()

    sampler = NvmlSampler(tmp_path, nvml_module=NoDriver(1))
    assert sampler.start() is False and sampler.reason_off == NO_DRIVER
