"""``decode-bound`` and ``preprocess-bound``: the image half of the request path takes a
large share of the server's work.

Threshold: TensorBoard / XProf's input-pipeline analysis calls a step highly input bound
when input processing is 20 % or more of it; we flag a stage from that mark. The gain is
Amdahl on the measured share, with the saving of a reduced-scale JPEG decode measured on
this host for an image whose decode time matches the session's."""

from __future__ import annotations

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import INPUT_BOUND_SHARE, knob, per_request_ms, percent, sample_server
from profiler.rules.contract import Rule, Verdict

ASSUMED_DRAFT_SAVING = 0.5  # without a measurement (--no-calibration): a reduced decode halves it

DRAFT_SNIPPET = """image = Image.open(io.BytesIO(body))
image.draft("RGB", (256, 256))   # libjpeg decodes at 1/2..1/8 scale: far fewer pixels
image = image.convert("RGB")"""


def decode_bound(ctx: AnalysisContext) -> list[Verdict]:
    share = ctx.service_share("decode")
    if share < INPUT_BOUND_SHARE:
        return []
    decode_ms = per_request_ms(ctx, "decode") or 0.0
    factor = ctx.draft_factor(max(decode_ms, 1.0))
    if factor is not None:
        removed = share * factor.decode_saving + ctx.service_share("preprocess") * factor.resize_saving
        method, assumptions = "measured factor", [
            f"images like a {factor.width}x{factor.height} JPEG (its full decode, {factor.full_decode_ms:.1f} ms "
            f"here, matches the {decode_ms:.1f} ms measured)", f"draft decode measured {factor.draft_decode_ms:.1f} "
            f"ms; the resize after it {factor.draft_resize_ms:.1f} vs {factor.full_resize_ms:.1f} ms"]
    else:
        removed, method = share * ASSUMED_DRAFT_SAVING, "amdahl"
        assumptions = [f"a reduced-scale decode saves {ASSUMED_DRAFT_SAVING:.0%} of decode time (assumed: no "
                       "timing on this host was allowed)"]
    flag = " (--decode-draft 1)" if sample_server(ctx) and knob(ctx, "--decode-draft") != "1" else ""
    fix = Fix(f"decode JPEGs at reduced scale: the model needs 224 px, not full resolution{flag}; or send "
              "smaller images", DRAFT_SNIPPET, {"--decode-draft": "1"})
    return [Verdict(f"image decode is {percent(share)} of the server's work", removed,
                    {"decode_share": round(share, 3), "decode_ms_per_request": round(decode_ms, 2),
                     "basis": ctx.stage_basis, "threshold": INPUT_BOUND_SHARE}, fix,
                    [EventRef("stages" if ctx.stage_basis == "stage spans" else "pyspy", stages=["decode"])],
                    method, assumptions)]


def preprocess_bound(ctx: AnalysisContext) -> list[Verdict]:
    share = ctx.service_share("preprocess")
    if share < INPUT_BOUND_SHARE:
        return []
    saving = 0.5
    fix = Fix("crop and resize in one step from a reduced-scale decode, convert to float after resizing, and "
              "normalize in place (or move preprocessing onto the accelerator)",
              "image = image.resize((224, 224), Image.BILINEAR, box=crop_box, reducing_gap=None)\n"
              "x = (np.asarray(image, np.float32) - mean) * inv_std   # one pass, after the resize")
    return [Verdict(f"preprocessing is {percent(share)} of the server's work", share * saving,
                    {"preprocess_share": round(share, 3), "preprocess_ms_per_request": per_request_ms(ctx, "preprocess"),
                     "basis": ctx.stage_basis, "threshold": INPUT_BOUND_SHARE}, fix,
                    [EventRef("stages" if ctx.stage_basis == "stage spans" else "pyspy", stages=["preprocess"])],
                    assumptions=["the resize/normalize work halves (fused crop+resize from a reduced decode, float "
                                 "conversion after the resize); not measured"])]


DECODE_BOUND = Rule("decode-bound", decode_bound)
PREPROCESS_BOUND = Rule("preprocess-bound", preprocess_bound)
