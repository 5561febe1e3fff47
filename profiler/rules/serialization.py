"""``serialization-overhead``: turning bytes into requests and answers into bytes (JSON,
base64, multipart, MessagePack) is a large part of the work. Flagged from 20 %, XProf's
"highly bound" mark. Writing the response to the socket is not counted: stacks show it as
serialize's tail (``send``), but no change of encoding removes it, and on a busy threaded server
with little other work it alone reached ~24 % (header formatting and writes waiting for the GIL).
"""

from __future__ import annotations

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import percent
from profiler.rules.contract import Rule, Verdict

MIN_SHARE = 0.20
SAVING = 0.8  # raw bytes in, a small JSON out: most of the encode/decode disappears (assumed)


def check(ctx: AnalysisContext) -> list[Verdict]:
    send_share = ctx.send_ns / ctx.service_ns if ctx.service_ns > 0 else 0.0
    share = ctx.service_share("deserialize", "serialize") - send_share
    if share < MIN_SHARE:
        return []
    content = {}
    if ctx.wire is not None:
        content = dict(sorted(ctx.wire.content_types.items(), key=lambda kv: -kv[1])[:3])
    removed = share * SAVING
    fix = Fix("send images as raw bytes (Content-Type: image/jpeg), not base64 inside JSON; answer compactly",
              "curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' http://host/classify",
              {"--payload": "raw"})
    return [Verdict(f"(de)serialization is {percent(share)} of the server's work",
                    removed, {"share": round(share, 3), "deserialize_share": round(ctx.service_share("deserialize"), 3),
                              "serialize_share": round(ctx.service_share("serialize") - send_share, 3),
                              "socket_write_share_not_counted": round(send_share, 3),
                              "request_content_types": content}, fix,
                    [EventRef("stages" if ctx.stage_basis == "stage spans" else "pyspy",
                              stages=["deserialize", "serialize"])],
                    assumptions=["sending the image as raw bytes (no base64/JSON wrapping) removes ~80% of "
                                 "(de)serialization time (assumed)"])]


RULE = Rule("serialization-overhead", check)
