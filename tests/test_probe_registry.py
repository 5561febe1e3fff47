"""One probe vocabulary: the registry's probes are what ``--probes`` accepts, every source a probe
produces has an ingester, and a probe that cannot start is marked off with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from probes.protocol import ProbeUnavailable, Target
from probes.registry import DEFAULT_PROBES, OTHER_SOURCES, PROBE_SPECS, PROBES, sources_of
from profiler.collect import Collector, parse_probes
from profiler.ingest import INGESTERS
from profiler.session import Session


def test_every_source_has_an_ingester_and_every_ingester_a_source() -> None:
    produced = {source for spec in PROBE_SPECS for source in spec.sources}
    assert produced | set(OTHER_SOURCES) == set(INGESTERS)
    assert sources_of("framework") == ("ort", "torch") and sources_of("loadgen") == ("loadgen",)


def test_probes_option_speaks_the_registry_names() -> None:
    assert parse_probes("default") == set(DEFAULT_PROBES) and parse_probes("all") == set(PROBES)
    assert parse_probes("-pyspy") == set(DEFAULT_PROBES) - {"pyspy"}
    with pytest.raises(ValueError, match="unknown probe 'gpu'"):
        parse_probes("gpu")


def test_a_probe_that_cannot_start_is_off_with_its_reason_and_the_others_run(tmp_path: Path, monkeypatch) -> None:
    started, stopped = [], []

    class Fine:
        def __init__(self, target: Target) -> None:
            self.target = target

        def start(self) -> dict:
            started.append(self.target.raw_dir("fine").name)
            return {"interval_s": self.target.interval_s}

        def stop(self) -> tuple[dict, list[str]]:
            stopped.append("fine")
            return {"samples": 3}, ["fine: one problem"]

    class Refuses:
        def __init__(self, target: Target) -> None:
            pass

        def start(self) -> dict:
            raise ProbeUnavailable("no such device here")

        def stop(self) -> tuple[dict, list[str]]:
            raise AssertionError("a probe that did not start is not stopped")

    specs = tuple(spec.__class__(spec.name, spec.sources, spec.default, spec.summary,
                                 {"pyspy": Fine, "nvml": Refuses}.get(spec.name)) for spec in PROBE_SPECS)
    monkeypatch.setattr("profiler.collect.PROBE_SPECS", specs)
    session = Session.create(tmp_path / "s")
    collector = Collector(session, pid=1, probes={"pyspy", "nvml"}, use_agent=False, interval_s=0.5)
    collector.start()
    assert started == ["fine"]
    probes = session.meta["probes"]
    assert probes["pyspy"] == {"status": "on", "interval_s": 0.5}
    assert probes["nvml"] == {"status": "off", "reason": "no such device here"}
    problems = collector.stop()
    assert stopped == ["fine"] and problems == ["fine: one problem"]
    assert session.meta["probes"]["pyspy"] == {"status": "on", "interval_s": 0.5, "samples": 3}
