"""``serialization-overhead``: turning bytes into requests and answers into bytes (JSON,
base64, multipart, MessagePack) is a large part of the work. Flagged from 20 %, XProf's
"highly bound" mark: from stacks, writing the response to the socket counts as serialize too,
and on a server with little other work that alone reaches ~11 % (measured on a plain
http.server answering small JSON)."""

from __future__ import annotations

import pandas as pd

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Finding, Fix
from profiler.rules.common import finding, percent

MIN_SHARE = 0.20
SAVING = 0.8  # raw bytes in, a small JSON out: most of the encode/decode disappears (assumed)


def check(timeline: pd.DataFrame, ctx: AnalysisContext) -> list[Finding]:
    share = ctx.service_share("deserialize", "serialize")
    if share < MIN_SHARE:
        return []
    content = {}
    if ctx.wire is not None:
        content = dict(sorted(ctx.wire.content_types.items(), key=lambda kv: -kv[1])[:3])
    removed = share * SAVING
    gain = ctx.amdahl(removed, ["sending the image as raw bytes (no base64/JSON wrapping) removes ~80% of "
                                "(de)serialization time (assumed)"])
    fix = Fix("send images as raw bytes (Content-Type: image/jpeg), not base64 inside JSON; answer compactly",
              "curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' http://host/classify",
              {"--payload": "raw"})
    return [finding(ctx, "serialization-overhead", f"(de)serialization is {percent(share)} of the server's work",
                    removed, {"share": round(share, 3), "deserialize_share": round(ctx.service_share("deserialize"), 3),
                              "serialize_share": round(ctx.service_share("serialize"), 3),
                              "request_content_types": content}, fix, gain,
                    [EventRef("stages" if ctx.stage_basis == "stage spans" else "pyspy",
                              stages=["deserialize", "serialize"])])]
