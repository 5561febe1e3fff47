"""Model discovery: the model file a running server loaded, found from outside (its command line,
environment, frame locals through a real ``py-spy dump --locals``, or a literal in its own
source), and what the calibration does with it — time that file, or say the model is unknown
rather than borrow the sample ResNet-18's factors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from probes.model_discovery import discover, model_format
from probes.pyspy import pyspy_binary
from profiler.analysis.calibration_policy import CalibrationPolicy, model_unknown_note

pytestmark = pytest.mark.slow


def serve(tmp_path: Path, body: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """A small Python process that keeps running (the shape of a server holding its model)."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(body))
    process = subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path, env=env)
    time.sleep(1.0)
    assert process.poll() is None
    return process


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "net.onnx"
    path.parent.mkdir()
    path.write_bytes(b"onnx bytes: discovery never parses the file")
    return path


def found(process: subprocess.Popen) -> list:
    try:
        return discover(process.pid, pyspy_binary())
    finally:
        process.kill()
        process.wait()


def test_a_path_on_the_command_line(tmp_path: Path, model: Path) -> None:
    process = serve(tmp_path, "import time\nwhile True: time.sleep(0.2)\n", "--model", "models/net.onnx")
    (first,) = found(process)
    assert (first.path, first.found_in, first.format) == (str(model.resolve()), "command line", "onnx")


def test_a_path_in_the_environment(tmp_path: Path, model: Path) -> None:
    import os

    process = serve(tmp_path, "import time\nwhile True: time.sleep(0.2)\n", env={**os.environ, "MODEL_PATH": str(model)})
    assert [(f.path, f.found_in) for f in found(process)] == [(str(model.resolve()), "environment")]


def test_a_path_kept_in_a_live_frame(tmp_path: Path, model: Path) -> None:
    """Built at run time (nowhere in the source as one literal): only the frame's locals show it."""
    process = serve(tmp_path, """
        import time
        def main():
            model_path = "models/" + "net" + ".onnx"
            while True:
                time.sleep(0.2)
        main()
    """)
    assert [(f.path, f.found_in) for f in found(process)] == [(str(model.resolve()), "frame locals")]


def test_a_literal_in_the_servers_own_source(tmp_path: Path, model: Path) -> None:
    process = serve(tmp_path, """
        import time
        MODEL = "models/net.onnx"   # module level: py-spy shows no locals for <module>
        def serve_forever():
            while True:
                time.sleep(0.2)
        serve_forever()
    """)
    assert [(f.path, f.found_in) for f in found(process)] == [(str(model.resolve()), "source")]


def test_the_one_model_file_in_the_working_directory_and_never_a_guess_among_several(tmp_path: Path) -> None:
    (tmp_path / "net.onnx").write_bytes(b"x")
    process = serve(tmp_path, "import time\nwhile True: time.sleep(0.2)\n")
    assert [(f.path, f.found_in) for f in found(process)] == [(str((tmp_path / "net.onnx").resolve()),
                                                              "working directory")]
    (tmp_path / "other.onnx").write_bytes(b"y")
    assert found(serve(tmp_path, "import time\nwhile True: time.sleep(0.2)\n")) == []


def test_no_model_anywhere_and_a_path_that_does_not_exist(tmp_path: Path) -> None:
    process = serve(tmp_path, "import time\nMODEL = 'missing/nowhere.onnx'\nwhile True: time.sleep(0.2)\n")
    assert found(process) == []


def test_torchscript_archives_are_told_from_pickled_weights(tmp_path: Path) -> None:
    import torch

    module = torch.jit.trace(torch.nn.Linear(4, 2), torch.zeros(1, 4))
    module.save(str(tmp_path / "scripted.pt"))
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "weights.pt")
    assert model_format(str(tmp_path / "scripted.pt")) == "torchscript"
    assert model_format(str(tmp_path / "weights.pt")) == "torch weights"


def test_the_calibration_times_the_found_model_and_never_borrows_the_sample_one(model: Path) -> None:
    attached = {"target": {"pid": 1}, "model": {"found": [{"path": str(model), "found_in": "source",
                                                           "format": "onnx"}]}}
    assert CalibrationPolicy("measure").model_for(attached) == model
    assert CalibrationPolicy("measure", model=Path("/x/mine.onnx")).model_for(attached) == Path("/x/mine.onnx")
    unknown = {"target": {"pid": 1}, "model": {"found": []}}
    loader = CalibrationPolicy("cached").loader(unknown)
    with pytest.raises(LookupError, match="model file was not found.*--model FILE.onnx"):
        loader()
    torchscript = {"target": {"pid": 1}, "model": {"found": [{"path": "/m/net.pt", "found_in": "command line",
                                                              "format": "torchscript"}]}}
    assert "net.pt (torchscript), which prof cannot time" in model_unknown_note(torchscript)
    assert CalibrationPolicy("off").loader(unknown) is None
    # the sample server runs the sample model: calibrating it is right
    assert CalibrationPolicy("cached").model_for({"server": {"knobs": []}}) is None


def test_a_found_onnx_file_says_whether_it_is_quantized(tmp_path: Path) -> None:
    """The precision of a model prof did not build is read from its graph (no weights, nothing run):
    rules must not take an INT8 file's timing for fp32."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    from probes.model_discovery import onnx_quantized

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    plain = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [weight])
    save(helper.make_model(plain, ir_version=8, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "fp32.onnx")
    scale, zero = numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")
    qdq = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
                             helper.make_node("MatMul", ["d", "w"], ["y"])], "g", [x], [y], [weight, scale, zero])
    save(helper.make_model(qdq, ir_version=8, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "int8.onnx")
    assert onnx_quantized(str(tmp_path / "fp32.onnx")) is False
    assert onnx_quantized(str(tmp_path / "int8.onnx")) is True
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    assert onnx_quantized(str(tmp_path / "broken.onnx")) is None
