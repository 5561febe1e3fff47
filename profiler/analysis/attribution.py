"""Stage attribution from stacks: which request stage each py-spy sample is in.

A server we did not write records no stage spans, but py-spy still sees its stacks. A table of
signatures (``signatures.toml`` next to this module, extended by user files) says which frames
belong to which stage — Pillow's decoders to ``decode``, ``Session.run`` to ``inference``,
``json/encoder.py`` to ``serialize``, a worker blocked on its queue to ``idle`` — and a stack
takes the stage of its innermost recognised frame, so ``Image.resize`` inside a user's
``preprocess()`` is preprocess whatever called it. Labels are the closed stage vocabulary of
:mod:`profiler.timeline` plus ``idle`` (a thread that waits: event loop, pool worker, accept) and
``send`` (writing the response out: status line, headers, socket writes). ``send`` is part of the
``serialize`` stage wherever stages are shown (:func:`as_stage`); it is kept apart so that a rule
about encoding cost does not count the socket, which no change of encoding removes.

Each distinct stack is classified once, and the stack table's shared prefixes are walked once,
so a recording of a million samples takes a fraction of a second.
"""

from __future__ import annotations

import linecache
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from profiler.analysis.signature_files import signature_files
from profiler.timeline import STAGES, StackTable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

IDLE = "idle"
SEND = "send"
OTHER = "other"
LABELS: tuple[str, ...] = (*STAGES, IDLE, SEND)
_STAGE_OF_LABEL = {SEND: "serialize"}
PYSPY_SOURCE = "pyspy"
PACKAGED_TABLE = "signatures.toml"
_PATTERN_FIELDS = ("function", "file", "line", "parent")
_FIELDS = ("stage", *_PATTERN_FIELDS, "leaf")

Frame = tuple[str, str, int]


@dataclass(frozen=True)
class Signature:
    """One entry of the table: a stage and the patterns one frame must match (``None``: any).

    ``line`` is searched in the frame's source line, ``parent`` in its caller's function;
    ``leaf`` restricts the entry to the innermost frame. ``origin`` says where the entry came
    from (``file#n``), for messages.
    """

    stage: str
    origin: str
    function: re.Pattern[str] | None = None
    file: re.Pattern[str] | None = None
    line: re.Pattern[str] | None = None
    parent: re.Pattern[str] | None = None
    leaf: bool = False

    def matches(self, function: str, parent_function: str, is_leaf: bool, line_text: Callable[[], str]) -> bool:
        """Whether a frame of ``function`` called from ``parent_function`` matches; the file
        pattern is checked by the caller, once per file, and ``line_text`` gives the frame's
        source line when a pattern needs it."""
        if self.leaf and not is_leaf:
            return False
        if self.function is not None and self.function.search(function) is None:
            return False
        if self.parent is not None and self.parent.search(parent_function) is None:
            return False
        return self.line is None or self.line.search(line_text()) is not None


def load_signatures(extra: Iterable[Path | str] = ()) -> list[Signature]:
    """The signature table: ``extra`` files, then those named in ``$PROF_SIGNATURES`` (an
    ``os.pathsep`` list), then the packaged table. For any one frame the earlier entry wins, so
    user files override the defaults for the frames they match (a deeper frame that some entry
    recognises still decides first). A bad file raises a one-line :class:`ValueError` naming the
    file and the entry."""
    table: list[Signature] = []
    for path in signature_files(extra):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ValueError(f"{path}: cannot read the signature file ({reason})") from None
        table += parse_signatures(text, str(path))
    packaged = resources.files("profiler.analysis").joinpath(PACKAGED_TABLE).read_text(encoding="utf-8")
    table += parse_signatures(packaged, f"{PACKAGED_TABLE} (packaged)")
    return table


def parse_signatures(text: str, origin: str) -> list[Signature]:
    """Signatures from the TOML ``text`` of one file (``[[signature]]`` entries), in order;
    ``origin`` names the file in error messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{origin}: not valid TOML ({exc})") from None
    unknown = sorted(set(document) - {"signature"})
    if unknown:
        raise ValueError(f"{origin}: unknown top-level key {unknown[0]!r} (expected [[signature]] entries)")
    entries = document.get("signature")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{origin}: no [[signature]] entries")
    return [_signature(entry, f"{origin}#{index}") for index, entry in enumerate(entries, start=1)]


def _signature(entry: Any, where: str) -> Signature:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: a signature must be a table with a stage and patterns")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(_FIELDS)})")
    if "stage" not in entry:
        raise ValueError(f"{where}: missing field 'stage'")
    stage = entry["stage"]
    if stage not in LABELS:
        raise ValueError(f"{where}: unknown stage {stage!r} (one of {', '.join(LABELS)})")
    if not any(name in entry for name in _PATTERN_FIELDS):
        raise ValueError(f"{where}: missing a pattern field (give function, file, line or parent)")
    leaf = entry.get("leaf", False)
    if not isinstance(leaf, bool):
        raise ValueError(f"{where}: field 'leaf' must be true or false")
    patterns = {name: _compile(entry[name], name, where) for name in _PATTERN_FIELDS if name in entry}
    return Signature(stage=stage, origin=where, leaf=leaf, **patterns)


def _compile(pattern: Any, name: str, where: str) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise ValueError(f"{where}: field {name!r} must be a string (a regular expression)")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{where}: bad regular expression in {name!r}: {exc}") from None


class _Classifier:
    """Matches frames against one table, remembering each file's candidate signatures and
    each (frame, caller, leaf) answer."""

    def __init__(self, signatures: Sequence[Signature]) -> None:
        self.signatures = tuple(signatures)
        self._by_file: dict[str, tuple[Signature, ...]] = {}
        self._sources: dict[str, list[str]] = {}
        self._answers: dict[tuple[str, str, int, str, bool], str | None] = {}

    def frame_stage(self, frame: Frame, parent_function: str, is_leaf: bool) -> str | None:
        """The stage of the first signature matching ``frame``, or None."""
        key = (*frame, parent_function, is_leaf)
        if key in self._answers:
            return self._answers[key]
        function, file, line = frame
        candidates = self._by_file.get(file)
        if candidates is None:
            posix = file.replace("\\", "/")  # a recording made on Windows: the table's patterns use '/'
            candidates = self._by_file[file] = tuple(
                s for s in self.signatures if s.file is None or s.file.search(posix) is not None)
        stage = next((s.stage for s in candidates
                      if s.matches(function, parent_function, is_leaf, lambda: self._line_text(file, line))), None)
        self._answers[key] = stage
        return stage

    def _line_text(self, path: str, line: int) -> str:
        # Read once per file: linecache does not remember files it could not find, and a session
        # profiled elsewhere names many of those.
        lines = self._sources.get(path)
        if lines is None:
            lines = self._sources[path] = linecache.getlines(path)
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def stack_stage(self, frames_root_first: Sequence[Frame]) -> str:
        for depth in range(len(frames_root_first) - 1, -1, -1):
            parent = frames_root_first[depth - 1][0] if depth else ""
            stage = self.frame_stage(frames_root_first[depth], parent, depth == len(frames_root_first) - 1)
            if stage is not None:
                return stage
        return OTHER


def classify_stack(frames_root_first: Sequence[Frame], signatures: Sequence[Signature]) -> str:
    """The stage of one stack given as (function, file, line) frames, root first: that of the
    innermost frame some signature matches, ``other`` when none does."""
    return _Classifier(signatures).stack_stage(frames_root_first)


def as_stage(label: str) -> str:
    """The stage (or ``idle``) an attribution label belongs to: ``send`` is serialize's tail."""
    return _STAGE_OF_LABEL.get(label, label)


def attribute_samples(timeline: pd.DataFrame, stacks: StackTable,
                      signatures: Sequence[Signature] | None = None,
                      kinds: tuple[str, ...] = ("sample",)) -> pd.Series:
    """A stage label (categorical over :data:`LABELS`) for every py-spy row of ``timeline`` of
    these ``kinds`` (samples; add ``instant`` for the GIL snapshots, each a thread's stack at one
    moment), indexed like those rows. ``signatures`` default to :func:`load_signatures`."""
    table = load_signatures() if signatures is None else signatures
    rows = ((timeline["source"] == PYSPY_SOURCE) & timeline["kind"].isin(kinds)).to_numpy()
    ids = timeline["stack_id"].to_numpy(dtype=np.int64)[rows]
    inverse, distinct = pd.factorize(ids)
    labels = _classify_leaves(stacks, distinct, _Classifier(table))
    codes = np.asarray([LABELS.index(label) for label in labels], dtype=np.int8)[inverse]
    return pd.Series(pd.Categorical.from_codes(codes, categories=LABELS), index=timeline.index[rows],
                     name="stage")


def _classify_leaves(stacks: StackTable, leaves: np.ndarray, classifier: _Classifier) -> list[str]:
    """Stages of the stacks ending at ``leaves``. Stacks share their outer frames (a trie), so
    what a node and everything above it decide is remembered per node and walked only once."""
    decided: dict[int, str] = {}

    def frame(node: int) -> Frame:
        f = stacks.node_frames[node]
        return stacks.functions[f], stacks.files[f], stacks.lines[f]

    def caller(node: int) -> str:
        parent = stacks.parents[node]
        return stacks.functions[stacks.node_frames[parent]] if parent >= 0 else ""

    def from_node_up(node: int) -> str:
        walked: list[int] = []
        stage = OTHER
        while node >= 0:
            if node in decided:
                stage = decided[node]
                break
            walked.append(node)
            found = classifier.frame_stage(frame(node), caller(node), False)
            if found is not None:
                stage = found
                break
            node = stacks.parents[node]
        for seen in walked:
            decided[seen] = stage
        return stage

    labels = []
    for leaf in leaves.tolist():
        if leaf < 0:
            labels.append(OTHER)
            continue
        labels.append(classifier.frame_stage(frame(leaf), caller(leaf), True) or from_node_up(stacks.parents[leaf]))
    return labels
