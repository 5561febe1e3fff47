"""graph-fusion's eager branch on real torch.profiler traces, imported as a user would
(`prof import trace.json`): a model made of many tiny ops is a dispatch storm; a
convolution-heavy one is not, though most of its ops are short too (allocations, views)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from profiler.rules.graph_fusion import MIN_OPS, SMALL_OP_NS
from profiler.session import load
from tests.imported import import_findings

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs


class TinyOps(nn.Module):
    """300 elementwise steps on an 8x8 tensor: every op is a few µs of dispatch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(100):
            x = torch.relu(x * 1.01 + 0.1)
        return x


class Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.Conv2d(64, 64, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def profiled_import(model: nn.Module, example: torch.Tensor, tmp_path: Path, calls: int = 5) -> dict:
    torch.set_num_threads(1)
    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            model(example)
    trace = tmp_path / "trace.json"
    prof.export_chrome_trace(str(trace))
    return import_findings(trace, tmp_path / "session")


def test_a_storm_of_tiny_eager_ops_is_a_fusion_finding(tmp_path: Path) -> None:
    finding = profiled_import(TinyOps(), torch.randn(8, 8), tmp_path)["graph-fusion"]
    evidence = finding.evidence
    assert evidence["small_op_time_share"] >= 0.3 and evidence["small_ops"] >= 0.9 * evidence["top_level_ops"] >= 1000
    assert finding.fix.knob == {"--backend": "ort"} and "torch.compile" in finding.fix.snippet


def test_convolution_heavy_eager_model_is_not_a_storm(tmp_path: Path) -> None:
    findings = profiled_import(Convs(), torch.randn(1, 3, 224, 224), tmp_path, calls=20)
    assert "graph-fusion" not in findings
    # not for want of ops: there are enough, and most are short — by count it would look like a storm
    ops = load(tmp_path / "session").timeline
    assert len(ops) >= MIN_OPS and (ops["dur_ns"] < SMALL_OP_NS).mean() >= 0.5


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
