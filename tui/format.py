"""Small text helpers shared by the views: numbers, severities, colours that stay the same
from one run to the next (names are coloured by a checksum, never by ``hash``)."""

from __future__ import annotations

import zlib

from profiler.analysis.model import Gain

SEVERITY_STYLE = {"critical": "bold white on red", "high": "bold red", "medium": "yellow", "low": "cyan",
                  "info": "dim"}
STAGE_COLORS = {"receive": "#5f87d7", "deserialize": "#5fafd7", "decode": "#d7875f", "preprocess": "#d7af5f",
                "queue": "#808080", "h2d": "#af5fd7", "inference": "#5fd75f", "d2h": "#af87d7",
                "postprocess": "#87d7af", "serialize": "#d75f87", "model_load": "#d7d75f", "other": "#a8a8a8",
                "idle": "#4e4e4e"}
PALETTE = ("#5fafd7", "#d7875f", "#87d75f", "#d75f87", "#afafff", "#d7d75f", "#5fd7af", "#ff8787", "#87afd7",
           "#d7af87", "#af87ff", "#87d7d7")


def color_of(name: str) -> str:
    return STAGE_COLORS.get(name) or PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def ms(value: float | None) -> str:
    if value is None or value != value:
        return "—"
    if value >= 1000:
        return f"{value / 1000:,.2f} s"
    if value >= 10:
        return f"{value:,.0f} ms"
    if value >= 0.1:
        return f"{value:.2f} ms"
    return f"{value * 1000:.0f} µs"


def ns(value: int) -> str:
    return ms(value / 1e6)


def pct(value: float | None) -> str:
    return "—" if value is None or value != value else f"{value:.0%}" if value >= 0.1 else f"{value:.1%}"


def gain_short(gain: Gain | None) -> str:
    if gain is None:
        return "—"
    return f"×{gain.throughput_x:.2f}"


def gain_long(gain: Gain | None) -> str:
    if gain is None:
        return "not estimated (no model of this fix's effect on this host)"
    parts = [f"×{gain.throughput_x:.2f} throughput"]
    if gain.throughput_rps_before and gain.throughput_rps_after:
        parts[0] += f" ({gain.throughput_rps_before:.1f} → {gain.throughput_rps_after:.1f} req/s)"
    if gain.p50_ms_before is not None and gain.p50_ms_after is not None:
        parts.append(f"p50 {gain.p50_ms_before:.0f} → {gain.p50_ms_after:.0f} ms")
    return ", ".join(parts) + f" (by {gain.method})"


def short_path(path: str) -> str:
    """The last two parts of a source path: enough to tell files apart in a narrow column."""
    return "/".join(path.replace("\\", "/").split("/")[-2:])


def bar(fraction: float, width: int) -> str:
    """A horizontal bar in eighths of a cell."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + ("" if rest == 0 else " ▏▎▍▌▋▊▉"[rest])
