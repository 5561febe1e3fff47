"""The load generator's per-request records (``prof run``) -> ``loadgen`` spans.

One span per request as the client saw it: start on the epoch clock, client latency as
duration, and the request id the server echoes, so a client span joins the server's stage
spans of the same request. ``args`` keeps status, bytes each way, image size/format,
whether the body was an exact repeat, and whether it fell in the warm-up.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from profiler.timeline import make_events

SOURCE = "loadgen"
_KEPT = ("status", "bytes_sent", "bytes_received", "sha256", "image_size", "image_format", "duplicate", "warmup",
         "error")
RECORDS = "records.jsonl"
META = "meta.json"


def ingest_records(path: Path | str, pid: int = -1) -> pd.DataFrame:
    path = Path(path)
    ts, dur, ids, args = [], [], [], []
    with open(path, "rb") as handle:
        for line in handle:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                break  # a line cut off mid-write ends the file
            ts.append(int(record["start_ns"]))
            dur.append(max(int(record["latency_ns"]), 0))
            ids.append(str(record["request_id"]))
            args.append(orjson.dumps({k: record.get(k) for k in _KEPT}).decode())
    return make_events(ts_ns=np.asarray(ts, dtype=np.int64), source=SOURCE, kind="span", name="request",
                       dur_ns=np.asarray(dur, dtype=np.int64), pid=pid, tid=-1, request_id=ids, args=args)


def ingest_directory(directory: Path) -> pd.DataFrame | None:
    records = directory / RECORDS
    if not records.is_file():
        return None
    pid = -1
    if (directory / META).is_file():
        pid = int(json.loads((directory / META).read_text()).get("pid", -1))
    return ingest_records(records, pid)
