"""Which model file a running server loaded, found from outside: so that ``prof attach`` times
*that* model for its gains, not the sample ResNet-18.

Where a path can show, in order of trust:

1. the command line (``python app.py --model /models/net.onnx``),
2. the environment (``MODEL_PATH=/models/net.onnx``),
3. files the process holds open or mapped (a runtime that memory-maps its weights),
4. the local variables of its live frames (``py-spy dump --locals``: a ``main()`` that keeps
   ``model_path`` while it serves),
5. string literals in the server's own source files (the files of its frames, not the
   standard library or installed packages): ``InferenceSession("model.onnx")`` at module level;
6. failing all of these, the one model file in its working directory (none is taken among several).

Relative paths are resolved against the process's working directory (and, for a literal, the
source file's directory); only files that exist count. Nothing is opened beyond a zip
listing (TorchScript archives have a ``code/`` folder; anything else with a torch suffix is
pickled weights, which prof never loads).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

SUFFIXES = ("onnx", "ort", "pt", "pth", "ts", "torchscript", "jit")
PATH_TEXT = re.compile(r"""(?<![\w.])((?:~|\.{1,2}|/)?[\w.+~/-]*?[\w+-]\.(?:%s))(?![\w])""" % "|".join(SUFFIXES))
LIBRARY = re.compile(r"/(lib/python\d[\d.]*|site-packages|dist-packages)/")
MAX_SOURCE_BYTES = 2_000_000


@dataclass(frozen=True)
class FoundModel:
    path: str
    found_in: str  # "command line", "environment", "open file", "frame locals", "source"
    format: str  # "onnx", "torchscript", "torch weights"

    def to_dict(self) -> dict:
        return asdict(self)


def discover(pid: int, pyspy: str | None = "py-spy", timeout_s: float = 10.0) -> list[FoundModel]:
    """Every model file this process shows, most trusted first, each path once."""
    cwd = _readlink(f"/proc/{pid}/cwd")
    found: list[FoundModel] = []
    seen: set[str] = set()

    def add(text: str, where: str, *bases: str | None) -> None:
        for candidate in PATH_TEXT.findall(text):
            path = _resolve(candidate, [b for b in bases if b])
            if path is not None and path not in seen:
                seen.add(path)
                found.append(FoundModel(path, where, model_format(path)))

    for arg in _read_nul(f"/proc/{pid}/cmdline"):
        add(arg, "command line", cwd)
    for entry in _read_nul(f"/proc/{pid}/environ"):
        add(entry.partition("=")[2], "environment", cwd)
    for link in _open_files(pid):
        add(link, "open file")
    if pyspy:
        dump = _locals_dump(pid, pyspy, timeout_s)
        add(dump, "frame locals", cwd)
        for source in _own_sources(dump):
            try:
                if os.path.getsize(source) <= MAX_SOURCE_BYTES:
                    add(Path(source).read_text(errors="replace"), "source", os.path.dirname(source), cwd)
            except OSError:
                continue
    if not found and cwd:  # nothing names it: one model file beside the server is taken, never a guess among several
        beside = [name for name in _listdir(cwd) if name.lower().endswith(tuple("." + s for s in SUFFIXES))]
        if len(beside) == 1:
            add(beside[0], "working directory", cwd)
    return found


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd", "QGemm")


@functools.lru_cache(maxsize=16)
def onnx_quantized(path: str) -> bool | None:
    """Whether an ONNX file's graph is quantized (INT8 ops or QDQ pairs); None when it cannot be
    read. Only the graph is parsed — no weights from external files, nothing executed."""
    try:
        import onnx

        model = onnx.load(path, load_external_data=False)
    except Exception:
        return None
    ops = {node.op_type for node in model.graph.node}
    return bool(ops & set(QUANTIZED_OPS))


def model_format(path: str) -> str:
    if path.lower().endswith((".onnx", ".ort")):
        return "onnx"
    try:
        with zipfile.ZipFile(path) as archive:
            if any("/code/" in name for name in archive.namelist()):
                return "torchscript"
    except (OSError, zipfile.BadZipFile):
        pass
    return "torch weights"


def _resolve(candidate: str, bases: list[str]) -> str | None:
    candidate = os.path.expanduser(candidate)
    options = [candidate] if os.path.isabs(candidate) else [os.path.join(base, candidate) for base in bases]
    for option in options:
        if os.path.isfile(option):
            return os.path.realpath(option)
    return None


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _read_nul(path: str) -> list[str]:
    try:
        with open(path, "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def _open_files(pid: int) -> list[str]:
    links = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = _readlink(f"/proc/{pid}/fd/{fd}")
            if link:
                links.append(link)
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/maps") as handle:
            links += [line.split(None, 5)[5].strip() for line in handle if len(line.split(None, 5)) == 6]
    except OSError:
        pass
    return sorted(set(links))


def _locals_dump(pid: int, pyspy: str, timeout_s: float) -> str:
    try:
        done = subprocess.run([pyspy, "dump", "--pid", str(pid), "--locals", "--full-filenames", "--nonblocking"],
                              capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


FRAME_LINE = re.compile(r"^\s+\S.* \((/[^()]+\.py):\d+\)$")


def _own_sources(dump: str) -> list[str]:
    """The server's own source files among the dumped frames (not the stdlib, not packages)."""
    files = []
    for line in dump.splitlines():
        match = FRAME_LINE.match(line)
        if match and not LIBRARY.search(match.group(1)) and match.group(1) not in files:
            files.append(match.group(1))
    return files
