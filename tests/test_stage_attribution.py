"""Stage attribution from stacks alone, on real py-spy recordings of real servers: the sample
server (checked against the stage spans it records itself), and a Flask app and a plain
http.server app that know nothing of prof (the latter also checked against its own step
timings). Then the signature table's rules: user files, innermost-frame precedence, line text,
bare function names, bad files, speed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from probes.pyspy import PySpyOptions, PySpyRecorder, ingest_recording
from profiler import load
from profiler.analysis.signature_files import ENV_SIGNATURES
from profiler.analysis.attribution import (IDLE, LABELS, attribute_samples, classify_stack,
                                           load_signatures)
from profiler.timeline import StackTable, make_events
from samples.images import synthetic_encoded
from samples.sample_server.process import free_port

SITE = "/venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
APP = "/srv/app.py"
STEPS = ("decode", "preprocess", "inference", "serialize")
PIL_IMAGE = f"{SITE}/PIL/Image.py"
TORCH_MODULE = f"{SITE}/torch/nn/modules/module.py"
TORCH_FUNCTIONAL = f"{SITE}/torch/nn/functional.py"
ORT_SESSION = f"{SITE}/onnxruntime/capi/onnxruntime_inference_collection.py"
THREADING = f"{STDLIB}/threading.py"
WORKER = [("Thread._bootstrap", THREADING, 995), ("Thread._bootstrap_inner", THREADING, 1038),
          ("Thread.run", THREADING, 975), ("_worker", f"{STDLIB}/concurrent/futures/thread.py", 81)]

# A classifier written the way quick servers are: every step inline in one function, nothing
# named after a stage, no prof import. It reports its own step timings in a header, the ground
# truth the attribution is checked against.
FOREIGN_SERVER = textwrap.dedent("""
    import io, json, sys, time
    import numpy as np
    import onnxruntime
    from PIL import Image

    KIND, MODEL, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
    MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    SESSION = onnxruntime.InferenceSession(MODEL, options, providers=["CPUExecutionProvider"])


    def classify_bytes(body):
        t0 = time.perf_counter_ns()
        image = Image.open(io.BytesIO(body))
        image.load()
        t1 = time.perf_counter_ns()
        image = image.convert("RGB").resize((224, 224), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32)
        batch = ((pixels / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
        t2 = time.perf_counter_ns()
        (features,) = SESSION.run(None, {"input": batch})
        t3 = time.perf_counter_ns()
        answer = json.dumps({"features": features.ravel()[:6000].tolist()}).encode()
        t4 = time.perf_counter_ns()
        return answer, f"{t1 - t0},{t2 - t1},{t3 - t2},{t4 - t3}"


    if KIND == "flask":
        from flask import Flask, request

        app = Flask(__name__)

        @app.post("/classify")
        def classify():
            answer, steps = classify_bytes(request.get_data())
            return app.response_class(answer, mimetype="application/json", headers={"X-Step-Ns": steps})

        app.run("127.0.0.1", PORT, threaded=True)
    else:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answer, steps = classify_bytes(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.send_header("X-Step-Ns", steps)
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
""")


def tiny_classifier(path: Path) -> Path:
    """A few Conv/Relu layers on 3x224x224: a few ms of ORT work, built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, previous, channels = [], [], "input", 3
    for i, (out, stride) in enumerate([(16, 2), (48, 2), (48, 1), (48, 1), (48, 1)]):
        kernel = (rng.standard_normal((out, channels, 3, 3)) * 0.1).astype(np.float32)
        weights.append(numpy_helper.from_array(kernel, f"w{i}"))
        nodes.append(helper.make_node("Conv", [previous, f"w{i}"], [f"conv{i}"], kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1], strides=[stride, stride]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
        previous, channels = f"relu{i}", out
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            [1, 3, 224, 224])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, None)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the project allows
    onnx.save(model, str(path))
    return path


def time_shares(events: pd.DataFrame, labels: pd.Series) -> pd.Series:
    """Share of sampled thread time per label (every label present, zeros included)."""
    time_per_label = events.loc[labels.index, "dur_ns"].groupby(labels.to_numpy(), observed=False).sum()
    return (time_per_label / time_per_label.sum()).reindex(list(LABELS), fill_value=0.0)


def busy(shares: pd.Series) -> pd.Series:
    """Shares of the time threads were not idle."""
    return shares.drop(IDLE) / (1.0 - shares[IDLE])


# ------------------------------------------------------------------------------ the sample server


@pytest.fixture(scope="module")
def sample_server_session(artifact_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("attribution") / "session"
    result = subprocess.run([sys.executable, "-m", "profiler.cli", "run", "sample_server", "--duration", "4",
                             "--warmup", "1", "--concurrency", "4", "--probes", "pyspy,stages",
                             "--pyspy-rate", "100", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    return out


@pytest.mark.slow
def test_sample_server_shares_from_stacks_match_its_own_stage_spans(sample_server_session) -> None:
    session = load(sample_server_session)
    timeline = session.timeline
    labels = attribute_samples(timeline, session.stacks)
    sample_rows = timeline.index[(timeline["source"] == "pyspy") & (timeline["kind"] == "sample")]
    assert labels.index.equals(sample_rows)

    shares = time_shares(timeline, labels)
    assert shares["other"] < 0.20, shares.to_dict()  # the waiting threads are recognised as idle
    assert shares[IDLE] > 0.3, shares.to_dict()
    attributed = busy(shares)
    spans = timeline[timeline["source"] == "stages"]
    span_time = spans["dur_ns"].groupby(spans["stage"], observed=True).sum().drop(["queue", "model_load"],
                                                                                  errors="ignore")
    measured = span_time / span_time.sum()
    assert abs(attributed["inference"] - measured["inference"]) <= 0.15, (attributed.to_dict(), measured.to_dict())
    image_work = ["decode", "preprocess"]
    assert abs(attributed[image_work].sum() - measured[image_work].sum()) <= 0.15, (attributed.to_dict(),
                                                                                   measured.to_dict())
    assert attributed["decode"] > 0 and attributed["preprocess"] > 0


# --------------------------------------------------------------------- servers we did not write


def drive(url: str, image: bytes, seconds: float) -> np.ndarray:
    """Requests one after another for ``seconds``, a random pause apart; the server's own step
    times, summed. Back-to-back requests of equal work repeat with a fixed period, which py-spy's
    fixed-rate samples can lock onto and then see one step far more often than its share."""
    steps = np.zeros(len(STEPS), dtype=np.int64)
    pauses = np.random.default_rng(7)
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < deadline:
            response = client.post(url, content=image, headers={"Content-Type": "image/jpeg"})
            response.raise_for_status()
            steps += np.asarray(response.headers["X-Step-Ns"].split(","), dtype=np.int64)
            time.sleep(pauses.uniform(0.0, 0.01))
    return steps


def wait_listening(server: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)  # 404 or 501: listening is all we need
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail(f"the server did not listen within 60 s: {log.read_text()}")


def profile_foreign_server(framework: str, tmp_path: Path) -> tuple[pd.Series, pd.Series]:
    """Serve FOREIGN_SERVER with ``framework``, drive it for 3 s under py-spy; the shares of all
    sampled time per label, and the shares of the four steps by the server's own clock."""
    script = tmp_path / "foreign_server.py"
    script.write_text(FOREIGN_SERVER)
    model = tiny_classifier(tmp_path / "tiny.onnx")
    port, log = free_port(), tmp_path / "server.log"
    with open(log, "wb") as output:
        server = subprocess.Popen([sys.executable, str(script), framework, str(model), str(port)], stdout=output,
                                  stderr=subprocess.STDOUT)
    recorder = PySpyRecorder(server.pid, tmp_path / "raw", PySpyOptions(rate=100))
    try:
        wait_listening(server, port, log)
        recorder.start()
        timed = drive(f"http://127.0.0.1:{port}/classify", synthetic_encoded(11, 1024, 768, "jpeg"), seconds=3.0)
    finally:
        trace = recorder.stop()
        server.kill()
        server.wait()
    assert trace is not None
    stacks = StackTable()
    events = ingest_recording(tmp_path / "raw", server.pid, stacks)
    return time_shares(events, attribute_samples(events, stacks)), pd.Series(timed / timed.sum(), index=STEPS)


@pytest.mark.slow
def test_flask_app_stages_are_recognised_from_its_stacks(tmp_path: Path) -> None:
    shares, _ = profile_foreign_server("flask", tmp_path)
    assert shares["other"] < 0.20, shares.to_dict()
    attributed = busy(shares)
    for stage in STEPS:
        assert attributed[stage] >= 0.04, (stage, attributed.to_dict())
    # No comparison with the server's clock here: werkzeug runs each request on a new thread, and
    # py-spy's chrometrace keeps a finished thread's last stack open until a thread with the same
    # id is sampled again, so that stack's time is overstated by the gap.


@pytest.mark.slow
def test_http_server_app_stage_shares_match_its_own_clock(tmp_path: Path) -> None:
    shares, measured = profile_foreign_server("http.server", tmp_path)
    assert shares["other"] < 0.20, shares.to_dict()
    attributed = busy(shares)
    for stage in STEPS:
        assert attributed[stage] >= 0.04, (stage, attributed.to_dict())
    # The share each step has of the four together. Not serialize: from stacks it also holds
    # writing the response out, which the server's clock does not see.
    of_steps = attributed[list(STEPS)] / attributed[list(STEPS)].sum()
    for stage in ("decode", "inference"):
        assert abs(of_steps[stage] - measured[stage]) <= 0.15, (stage, of_steps.to_dict(), measured.to_dict())


# ---------------------------------------------------------------------------- the table's rules


def test_a_user_signature_file_overrides_the_packaged_table(tmp_path: Path, monkeypatch) -> None:
    # Here "decode_image" really crops and normalizes: the user says so.
    stack = [("<module>", APP, 1), ("handle", APP, 30), ("decode_image", APP, 12)]
    deeper = [*stack, ("Session.run", ORT_SESSION, 266)]
    assert classify_stack(stack, load_signatures()) == "decode"
    user = tmp_path / "mine.toml"
    user.write_text("[[signature]]\nstage = \"preprocess\"\nfunction = '(^|\\.)decode_image$'\n"
                    "file = '/srv/app\\.py$'\n")
    assert classify_stack(stack, load_signatures([user])) == "preprocess"
    # A frame deeper in the stack that the table recognises still decides first.
    assert classify_stack(deeper, load_signatures([user])) == "inference"

    monkeypatch.setenv(ENV_SIGNATURES, os.pathsep.join([str(tmp_path / "also.toml"), str(user)]))
    (tmp_path / "also.toml").write_text("[[signature]]\nstage = \"queue\"\nfunction = '^handle$'\n")
    signatures = load_signatures()
    assert classify_stack(stack, signatures) == "preprocess"
    assert classify_stack(stack[:2], signatures) == "queue"
    assert [s.origin for s in signatures[:2]] == [f"{tmp_path / 'also.toml'}#1", f"{user}#1"]


@pytest.mark.parametrize("frames, stage", [
    ([("handle", APP, 5), ("preprocess", APP, 20), ("Image.resize", PIL_IMAGE, 2440)], "preprocess"),
    # Image.open is lazy: the resize decodes, and the decoder is the innermost recognised frame.
    ([("handle", APP, 5), ("decode_image", APP, 9), ("Image.resize", PIL_IMAGE, 2440),
      ("ImageFile.load", f"{SITE}/PIL/ImageFile.py", 425)], "decode"),
    ([("handle", APP, 5), ("Module._wrapped_call_impl", TORCH_MODULE, 1736), ("Module._call_impl", TORCH_MODULE, 1747),
      ("Net.forward", APP, 40), ("softmax", TORCH_FUNCTIONAL, 2140)], "inference"),
    ([("handle", APP, 5), ("postprocess", APP, 60), ("softmax", TORCH_FUNCTIONAL, 2140)], "postprocess"),
    # Within one frame the table's order decides: Pillow's encoder lives in the decoder's plugin.
    ([("handle", APP, 5), ("Image.save", PIL_IMAGE, 2568), ("_save", f"{SITE}/PIL/JpegImagePlugin.py", 660)],
     "serialize"),
    # Writing the response out is `send` (serialize's tail, kept apart from encoding).
    ([("handle_one_request", f"{STDLIB}/http/server.py", 424), ("do_POST", APP, 30),
      ("BaseHTTPRequestHandler.end_headers", f"{STDLIB}/http/server.py", 538),
      ("BaseHTTPRequestHandler.flush_headers", f"{STDLIB}/http/server.py", 542),
      ("SocketIO.write", f"{STDLIB}/socket.py", 720)], "send"),
    (WORKER, IDLE),
    # A pool worker is idle only as the innermost frame: below it, it runs a work item.
    ([*WORKER, ("_WorkItem.run", f"{STDLIB}/concurrent/futures/thread.py", 58), ("crunch", APP, 70)], "other"),
])
def test_the_innermost_recognised_frame_decides(frames, stage) -> None:
    assert classify_stack(frames, load_signatures()) == stage


@pytest.mark.parametrize("function, file, stage", [
    ("Session.run", ORT_SESSION, "inference"), ("Condition.wait", THREADING, IDLE),
    ("Image.resize", PIL_IMAGE, "preprocess"), ("ImageFile.load", f"{SITE}/PIL/ImageFile.py", "decode"),
    ("InferenceSession._create_inference_session", ORT_SESSION, "model_load"),
    ("LimitedStream.readall", f"{SITE}/werkzeug/wsgi.py", "receive"),
])
def test_bare_function_names_are_recognised_as_well_as_qualified_ones(function: str, file: str, stage: str) -> None:
    """py-spy gives qualified names on Python >= 3.11 only; before, "Session.run" reads "run"."""
    signatures = load_signatures()
    for name in (function, function.rsplit(".", 1)[-1]):
        assert classify_stack([("handle", APP, 5), (name, file, 100)], signatures) == stage, name


LINES = textwrap.dedent("""\
    def step(batch, logits, document, buffer, items):
        batch = batch.to("cuda", non_blocking=True)
        probs = logits.cpu()
        body = orjson.dumps(document)
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        time.sleep(0.01)
        batch = collate(items).to("cuda")
""")


@pytest.mark.parametrize("line, stage", [(2, "h2d"), (3, "d2h"), (4, "serialize"), (5, "decode"), (6, IDLE)])
def test_a_leaf_frames_source_line_names_the_c_call_it_is_in(tmp_path: Path, line: int, stage: str) -> None:
    source = tmp_path / "handler.py"
    source.write_text(LINES)
    stack = [("<module>", APP, 1), ("step", str(source), line)]
    assert classify_stack(stack, load_signatures()) == stage
    # The same line is not running its C call when a Python frame is below it.
    assert classify_stack([*stack, ("collate", APP, 80)], load_signatures()) == "other"


def test_line_rules_match_nothing_when_the_source_is_unreadable(tmp_path: Path) -> None:
    assert classify_stack([("step", str(tmp_path / "gone.py"), 2)], load_signatures()) == "other"


BAD_FILES = [
    ('[[signature]]\nstage = "decoding"\nfunction = "x"\n', r"#1: unknown stage 'decoding' \(one of receive"),
    ('[[signature]]\nstage = "decode"\nfunction = "x"\n[[signature]]\nstage = "decode"\nfile = "(unclosed"\n',
     r"#2: bad regular expression in 'file': missing \)"),
    ('[[signature]]\nfunction = "x"\n', r"#1: missing field 'stage'"),
    ('[[signature]]\nstage = "decode"\n', r"#1: missing a pattern field"),
    ('[[signature]]\nstage = "decode"\nfunctoin = "x"\n', r"#1: unknown field 'functoin'"),
    ('[[signature]]\nstage = "decode"\nfunction = "x"\nleaf = "yes"\n', r"#1: field 'leaf' must be true or false"),
    ('[[signature]]\nstage = "decode"\nfunction = 3\n', r"#1: field 'function' must be a string"),
    ('[[signature]\nstage = "decode"\n', r": not valid TOML \("),
    ('[signatures]\nstage = "decode"\n', r": unknown top-level key 'signatures'"),
    ("", r": no \[\[signature\]\] entries"),
]


@pytest.mark.parametrize("text, message", BAD_FILES)
def test_a_bad_signature_file_is_one_line_naming_file_and_entry(tmp_path: Path, monkeypatch, text: str,
                                                                message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as given:
        load_signatures([path])
    monkeypatch.setenv(ENV_SIGNATURES, str(path))
    with pytest.raises(ValueError, match=message) as from_environment:
        load_signatures()
    for error in (given, from_environment):
        assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_a_missing_signature_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing\.toml: cannot read the signature file \(No such file"):
        load_signatures([tmp_path / "missing.toml"])


def test_a_million_samples_are_attributed_in_well_under_a_second() -> None:
    stacks = StackTable()
    here = [(frame.name, frame.filename, frame.lineno or 0) for frame in traceback.extract_stack()]
    # Five thousand distinct stacks, each a real stack of this process with its own leaf.
    leaves = [stacks.intern([*here, (f"helper_{i}", APP, i)]) for i in range(5000)]
    stack_ids = np.resize(np.asarray(leaves), 1_000_000)
    events = make_events(ts_ns=np.arange(len(stack_ids)), source="pyspy", kind="sample", name="helper",
                         stack_id=stack_ids, dur_ns=10_000_000)
    signatures = load_signatures()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        labels = attribute_samples(events, stacks, signatures)
        best = min(best, time.perf_counter() - started)
    assert len(labels) == len(events) and labels.index.equals(events.index)
    assert best < 1.0, f"{len(events) / best:,.0f} samples/s"
