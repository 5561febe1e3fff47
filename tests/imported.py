"""A trace file through `prof import`, as a user would: the saved report's findings, by rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from profiler.analysis.model import Finding
from profiler.report_store import current_report as cached_report

PROF = [sys.executable, "-m", "profiler.cli"]


def import_findings(trace: Path, out: Path) -> dict[str, Finding]:
    """Import ``trace`` into the session ``out``; the findings of the report it saves."""
    result = subprocess.run([*PROF, "import", str(trace), "--out", str(out)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = cached_report(out)
    assert report is not None
    return {f.rule: f for f in report.findings}
