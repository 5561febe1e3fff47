"""``decode-bound`` and ``preprocess-bound``: the image half of the request path takes a
large share of the server's work.

Threshold: TensorBoard / XProf's input-pipeline analysis calls a step highly input bound
when input processing is 20 % or more of it; we flag a stage from that mark. The gain is
Amdahl on the measured share, with the saving of a reduced-scale JPEG decode measured on
this host for an image of the size the requests carried (the wire probe reads it from their
headers; else one whose decode time matches the session's). Preprocessing's saving is what
its CPU time per request exceeds a reference resize + crop + normalise of that image size
timed on this host: a server already that fast has nothing to gain, and no finding."""

from __future__ import annotations

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import INPUT_BOUND_SHARE, knob, per_request_ms, percent, sample_server
from profiler.rules.contract import Rule, Verdict

ASSUMED_DRAFT_SAVING = 0.5  # without a measurement (--no-calibration): a reduced decode halves it
FUSED_SAVING = 0.5  # preprocessing in C already: fusing its steps halves it (assumed)
VECTORIZED_SAVING = 0.9  # preprocessing as Python bytecode: vectorized, a tenth is left (assumed)
PYTHON_BOUND = 0.5  # preprocessing holds the GIL in at least half of the held snapshots
MAX_SAVING = 0.98  # a measured saving is capped: some preprocessing always stays
MAX_STRETCH = 2.0  # co-running work stretching CPU time more than 2x: the model itself is slow, not shared
MIN_SAVING = 0.25  # below a quarter of a 20 % share (5 % of the work) there is nothing worth a finding

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
            f"{factor.width}x{factor.height} JPEGs, as the requests carried" if ctx.images is not None and
            (ctx.images.width, ctx.images.height) == (factor.width, factor.height) else
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
    gil = ctx.gil
    in_python = gil is not None and gil.held_by("preprocess") >= PYTHON_BOUND
    saving = VECTORIZED_SAVING if in_python else FUSED_SAVING
    observed_ms = per_request_ms(ctx, "preprocess") or 0.0
    reference = ctx.preprocess_reference_ms()
    cpu_ms = observed_ms * ctx.cpu_per_wall  # wall time per request -> CPU time (threads share the cores)
    measured = reference is not None and cpu_ms > 0
    if measured:
        images, reference_ms = reference
        stretch = _co_running_stretch(ctx)
        saving = min(max(1.0 - reference_ms * stretch / cpu_ms, 0.0), MAX_SAVING)
    freed = ctx.gil_removed("preprocess")
    removed = (freed if freed is not None else share) * saving
    if removed < INPUT_BOUND_SHARE * MIN_SAVING:
        return []  # as fast as it gets for these images: a share, not a bottleneck to fix
    if in_python:
        fix = Fix("vectorize preprocessing: the per-pixel Python work holds the GIL — resize with Pillow and "
                  "normalize with one NumPy expression (both release the GIL)",
                  "image = image.resize((224, 224), Image.BILINEAR)\n"
                  "x = (np.asarray(image, np.float32) / 255.0 - mean) / std   # no Python loop over pixels")
        assumptions = [f"preprocessing holds the GIL in {percent(gil.held_by('preprocess'))} of the held snapshots: "
                       f"it runs as Python bytecode; vectorized it costs a tenth (assumed: {VECTORIZED_SAVING:.0%} "
                       "saved)"]
    else:
        fix = Fix("crop and resize in one step from a reduced-scale decode, convert to float after resizing, and "
                  "normalize in place (or move preprocessing onto the accelerator)",
                  "image = image.resize((224, 224), Image.BILINEAR, box=crop_box, reducing_gap=None)\n"
                  "x = (np.asarray(image, np.float32) - mean) * inv_std   # one pass, after the resize")
        assumptions = ["the resize/normalize work halves (fused crop+resize from a reduced decode, float "
                       "conversion after the resize); not measured"]
    if measured:
        assumptions[0] = (f"the requests' images are {images.width}x{images.height} ({images.format}, median of "
                          f"{images.count}): resize, crop and normalise of one that size take {reference_ms:.1f} ms "
                          f"here against {cpu_ms:.1f} ms of CPU per request now ({observed_ms:.1f} ms of wall time "
                          f"at {ctx.cpu_per_wall:.2f} CPU per second)"
                          + (f", co-running work stretching CPU time {stretch:.2f}x (the model's inference against "
                             "its calibrated time)" if stretch > 1.0 else "") + f": {saving:.0%} of it can go")
    if freed is not None:
        assumptions.append(f"the GIL is held in {percent(gil.held_share)} of snapshots: the share is of the "
                           "GIL-held time, which bounds throughput")
    return [Verdict(f"preprocessing is {percent(share)} of the server's work" + (" (pure Python)" if in_python else ""),
                    removed, {"preprocess_share": round(share, 3),
                              "preprocess_ms_per_request": per_request_ms(ctx, "preprocess"),
                              "reference_ms": round(reference[1], 2) if measured else None,
                              "image": f"{images.width}x{images.height}" if measured else None,
                              "gil_held_by_preprocess": round(gil.held_by("preprocess"), 3) if gil else None,
                              "basis": ctx.stage_basis, "threshold": INPUT_BOUND_SHARE}, fix,
                    [EventRef("stages" if ctx.stage_basis == "stage spans" else "pyspy", stages=["preprocess"])],
                    assumptions=assumptions)]


def _co_running_stretch(ctx: AnalysisContext) -> float:
    """How much longer work takes in CPU time when threads share the cores than alone: the
    server's inference CPU time per request against its model's calibrated single-image time
    (1 without a calibration of the served model; at most :data:`MAX_STRETCH`). Caches and the
    GIL hand-offs slow the reference preprocessing the same way."""
    from profiler.analysis.calibration_model import SAMPLE_MODEL

    calibration, inference_ms = ctx.calibration, per_request_ms(ctx, "inference")
    if calibration is None or calibration.model == SAMPLE_MODEL or not inference_ms or not calibration.covers(1):
        return 1.0
    alone = calibration.per_image_ms(1)
    return min(max(inference_ms * ctx.cpu_per_wall / alone, 1.0), MAX_STRETCH) if alone else 1.0


DECODE_BOUND = Rule("decode-bound", decode_bound)
PREPROCESS_BOUND = Rule("preprocess-bound", preprocess_bound)
