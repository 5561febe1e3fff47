"""The report kept beside a session (``report.json``), so ``prof report``, ``prof tui`` and
``prof diff`` open at once. A saved report is current when it is of this schema, no older than
the timeline, and was made with the same extra stack signatures as asked for now; otherwise
the session is diagnosed again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from typing import TYPE_CHECKING

from profiler.analysis.calibration_policy import CalibrationPolicy
from profiler.analysis.model import SCHEMA_VERSION, Report
from profiler.analysis.signature_files import signature_files
from profiler.atomic import atomic_write_bytes
from profiler.session_files import REPORT as REPORT_FILE
from profiler.session_files import TIMELINE

if TYPE_CHECKING:
    from profiler.session import Session


def save_report(session_path: Path, report: Report) -> None:
    """Keep the report beside the timeline (best effort: a read-only session is diagnosed again
    next time)."""
    try:
        atomic_write_bytes(Path(session_path) / REPORT_FILE, json.dumps(report.to_dict(), default=str).encode())
    except OSError:
        pass


def current_report(session_path: Path, signatures: Sequence[Path | str] = ()) -> Report | None:
    """The saved report if it is current for these signature files (see the module doc)."""
    report_path, timeline_path = Path(session_path) / REPORT_FILE, Path(session_path) / TIMELINE
    try:
        if not timeline_path.is_file() or report_path.stat().st_mtime < timeline_path.stat().st_mtime:
            return None
        data = json.loads(report_path.read_text())
        if data.get("schema_version") != SCHEMA_VERSION:
            return None
        if list(data.get("signatures") or []) != [str(p) for p in signature_files(signatures)]:
            return None
        return Report.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def report_for(session_path: Path, policy: CalibrationPolicy, signatures: Sequence[Path | str] = (),
               reuse: bool = True) -> Report:
    """The session's report: the saved one when ``reuse`` and it is current, else diagnosed now
    under ``policy`` and saved."""
    if reuse:
        saved = current_report(session_path, signatures)
        if saved is not None:
            return saved
    from profiler.session import load  # pandas: only when there is no current report to reuse

    return diagnose_and_save(load(session_path), policy, signatures)


def diagnose_and_save(session: Session, policy: CalibrationPolicy, signatures: Sequence[Path | str] = ()) -> Report:
    """Diagnose a loaded session under ``policy`` and keep the report beside it."""
    from profiler.analysis.diagnose import diagnose  # the measures and rules: only when diagnosing

    report = diagnose(session, policy, [Path(p) for p in signatures])
    save_report(session.path, report)
    return report
