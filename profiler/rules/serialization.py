"""``serialization-overhead``: turning bytes into requests and answers into bytes (JSON,
base64, multipart, MessagePack) is a large part of the work. Flagged from 20 %, XProf's
"highly bound" mark.

What the fix (raw image bytes in, a compact answer out) removes is scaled by the evidence it
changes, the sizes on the wire (the http probe's request and response bytes):

- decoding the request (JSON parse, base64): all but a tenth of it goes — raw bytes need none;
- encoding the answer and writing it to the socket (``send``): in proportion to the bytes, from
  the measured answer size down to a compact one (:data:`COMPACT_ANSWER_BYTES`); an answer
  already that small keeps its cost, and writing the response counts only when it shrinks;
- reading a base64 body: a quarter of it (base64 is 4/3 of the raw bytes).

When the GIL is the bottleneck (held in ≥ half of the snapshots) the shares — the 20 % mark's
too — are of the GIL-held time, not of per-request work: every thread waits for the one interpreter, so the capacity the
fix frees is the interpreter time this work holds.
"""

from __future__ import annotations

import numpy as np

from profiler.analysis.attribution import SEND
from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import percent
from profiler.rules.contract import Rule, Verdict

MIN_SHARE = 0.20
COMPACT_ANSWER_BYTES = 200  # {"label": ..., "score": ...} and a few top-k entries
DECODE_LEFT = 0.1  # of request decoding, left with raw bytes (reading the body as it is)
BASE64_SAVING = 0.25  # of reading a base64 body: the raw bytes are 3/4 of it
ASSUMED_ENCODE_CUT = 0.8  # without the answer's size on the wire


def check(ctx: AnalysisContext) -> list[Verdict]:
    if ctx.service_ns <= 0:
        return []
    sizes = _sizes(ctx)
    known = bool(sizes.get("response_bytes_p50"))
    answer_cut = max(1.0 - COMPACT_ANSWER_BYTES / sizes["response_bytes_p50"], 0.0) if known else ASSUMED_ENCODE_CUT
    base64_body = "json" in " ".join(sizes.get("request_content_types", {})) and \
        sizes.get("request_bytes_p50", 0) > 10_000
    send_share = ctx.send_ns / ctx.service_ns
    deserialize, encode = ctx.service_share("deserialize"), ctx.service_share("serialize") - send_share
    send_cut = answer_cut if known and answer_cut >= 0.5 else 0.0  # the write shrinks only with the answer
    counted = deserialize + encode + (send_share if send_cut else 0.0)
    cuts = {"deserialize": 1.0 - DECODE_LEFT, "serialize": answer_cut, SEND: send_cut,
            "receive": BASE64_SAVING if base64_body else 0.0}
    gil = ctx.gil_removed("deserialize")
    if gil is not None:  # the interpreter bounds throughput: the share that counts is of its held time
        counted = max(counted, sum(ctx.gil_removed(label) for label in ("deserialize", "serialize")))
    if counted < MIN_SHARE:
        return []
    if gil is not None:
        removed = sum(ctx.gil_removed(label) * cut for label, cut in cuts.items())
        basis = f"of the GIL-held time (held in {percent(ctx.gil.held_share)} of snapshots: the interpreter bounds " \
                "throughput)"
    else:
        shares = {"deserialize": deserialize, "serialize": encode, SEND: send_share,
                  "receive": ctx.service_share("receive")}
        removed = sum(shares[label] * cut for label, cut in cuts.items())
        basis = "of the server's busy time"
    content = dict(sorted(sizes.get("request_content_types", {}).items(), key=lambda kv: -kv[1])[:3])
    fix = Fix("send images as raw bytes (Content-Type: image/jpeg), not base64 inside JSON; answer compactly",
              "curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' http://host/classify",
              {"--payload": "raw"})
    evidence = {"share": round(counted, 3), "deserialize_share": round(deserialize, 3),
                "serialize_share": round(encode, 3), "socket_write_share": round(send_share, 3),
                "request_content_types": content, **{k: v for k, v in sizes.items() if k != "request_content_types"},
                "removed": round(removed, 3)}
    assumptions = [f"raw bytes in: {1 - DECODE_LEFT:.0%} of request decoding goes"]
    if not known:
        assumptions.append(f"no wire sizes: encoding the answer shrinks {ASSUMED_ENCODE_CUT:.0%} (assumed); writing it "
                           "stays")
    elif answer_cut > 0:
        assumptions.append(f"a {COMPACT_ANSWER_BYTES}-byte answer instead of {sizes['response_bytes_p50']:,.0f} bytes: "
                           f"encoding and writing it shrink {answer_cut:.0%}")
    else:
        assumptions.append("the answer is already small: encoding and writing it stay")
    if base64_body:
        assumptions.append("reading the body: raw bytes are 3/4 of base64's")
    assumptions.append(f"shares {basis}")
    of_what = "the GIL-held time" if gil is not None else "the server's work"
    return [Verdict(f"(de)serialization is {percent(counted)} of {of_what}", removed, evidence, fix,
                    [EventRef("stages" if ctx.stage_basis == "stage spans" else "pyspy",
                              stages=["deserialize", "serialize"])], "wire sizes", assumptions)]


def _sizes(ctx: AnalysisContext) -> dict:
    """Median request and response bytes, and request content types, of the answered requests
    on the wire (empty without the http probe)."""
    wire = ctx.wire_requests
    if wire.empty:
        return {}
    answered = wire[wire["status"].eq(200)]
    out: dict = {}
    for column in ("request_bytes", "response_bytes"):
        values = answered[column].dropna().to_numpy(float) if column in answered else np.zeros(0)
        if len(values):
            out[f"{column}_p50"] = float(np.median(values))
    if ctx.wire is not None:
        out["request_content_types"] = dict(ctx.wire.content_types)
    return out


RULE = Rule("serialization-overhead", check)
