"""The names of a session directory's files: what the session store writes, and what light
readers (the saved report's check, the viewer's first frame) look at without loading pandas."""

META = "meta.json"
TIMELINE = "timeline.parquet"
STACK_FRAMES = "stack_frames.parquet"
STACK_NODES = "stack_nodes.parquet"
RAW = "raw"
REPORT = "report.json"
FORMAT_VERSION = 1
