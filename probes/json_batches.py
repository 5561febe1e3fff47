"""Decode one big JSON array of a (possibly gzipped) document in batches, as its text
inflates, with typed msgspec decoders: the text and the structs of one batch reuse the
memory of the one before, where 25 MB of text and 100k structs at once would each take
fresh pages (page faults cost ~3 µs each on a VM). Used by the kineto ingest, which also
encodes a batch's structs back to one JSON text per row (``encode_each``).

A batch ends after the last whole element in hand. The cut is found by a text search and
proven by the decode: a cut inside an element or a string cannot parse, and the caller then
falls back to reading the whole document (``NotBatchable``, ``msgspec.DecodeError``).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Iterator

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from isal import isal_zlib

GZIP_PIECE = 1 << 14  # compressed bytes inflated at a time: some 300 kB of trace JSON
TEXT_PIECE = 1 << 18  # the same for a plain JSON file
HEAD_LIMIT = 1 << 20  # the array should open within the first MiB; else read the whole document
_ELEMENT_GAP = re.compile(rb"\}\s*,\s*\Z")  # between two elements: one's "}", a comma, then the next's "{"


class NotBatchable(Exception):
    """The text is not laid out as batching expects; read the whole document instead."""


def text_pieces(raw: bytes) -> Iterator[bytes]:
    """The JSON text in consecutive pieces, inflated piece by piece if gzipped (ISA-L: twice
    zlib's speed). Raises EOFError if the stream is cut short, IsalError if it is corrupt,
    and NotBatchable if more gzip members follow (a whole-file reader takes those)."""
    if raw[:2] != b"\x1f\x8b":
        yield from (raw[start:start + TEXT_PIECE] for start in range(0, len(raw), TEXT_PIECE))
        return
    inflater = isal_zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer around the stream
    view = memoryview(raw)
    for start in range(0, len(raw), GZIP_PIECE):
        yield inflater.decompress(view[start:start + GZIP_PIECE])
    if not inflater.eof:
        raise EOFError("compressed file ended before the end-of-stream marker")
    if inflater.unused_data:
        raise NotBatchable("more than one gzip member")


def decode_in_batches(pieces: Iterable[bytes], key: bytes, batch_decoder: Any, document_decoder: Any,
                      on_batch: Callable[[int, list], None], share: tuple[int, int] = (0, 1)) -> Any:
    """Decode the array under ``key`` batch by batch (each to ``on_batch`` with its index);
    returns the document around it, decoded by ``document_decoder`` with the array emptied (its
    other fields taken from the text after the array, else from the text before it).

    ``share`` = (rank, workers) lets several processes split one document: every one of them
    cuts the same batches from the same text, and decodes only those whose index is rank modulo
    workers (interleaved, so each gets a like mix of events). Rank 0 also decodes the elements
    after the last cut and the document; the others return None."""
    rank, workers = share
    pieces = iter(pieces)
    head, rest = _array_head(pieces, key)
    index = 0
    for piece in pieces:
        cut, next_start = _last_element_end(piece)  # (one that straddles two pieces is passed over)
        if cut:
            if index % workers == rank:
                on_batch(index, batch_decoder.decode(b"".join((b"[", rest, memoryview(piece)[:cut], b"]"))))
            index += 1
            rest = piece[next_start:]
        else:
            rest += piece
    if rank:
        return None
    opening = b'{"' + key + b'":['
    tail = document_decoder.decode(opening + rest)  # the last elements and what follows the array
    on_batch(index, getattr(tail, key.decode()))
    front = document_decoder.decode(head + b"[]}")
    return _merged(tail, front, key.decode())


def _merged(tail: Any, front: Any, key: str) -> Any:
    """The document with an empty array and, per field, the tail's value or else the front's."""
    fields = {name: getattr(tail, name) or getattr(front, name)
              for name in tail.__struct_fields__ if name != key}
    return type(tail)(**{key: [], **fields})


def _array_head(pieces: Iterator[bytes], key: bytes) -> tuple[bytes, bytes]:
    """(the text before the array's "[", the text after it read so far)."""
    opening = re.compile(b'"' + re.escape(key) + rb'"\s*:\s*\[')
    text = b""
    for piece in pieces:
        text += piece
        found = opening.search(text)
        if found:
            return text[:found.end() - 1], text[found.end():]
        if len(text) > HEAD_LIMIT:
            break
    raise NotBatchable(f"no {key.decode()} array near the start")


def _last_element_end(text: bytes) -> tuple[int, int]:
    """(end of the last element in ``text`` that another follows, start of that next one),
    or (0, 0)."""
    end = len(text)
    while (brace := text.rfind(b"{", 0, end)) > 0:
        gap = _ELEMENT_GAP.search(text, max(brace - 64, 0), brace)
        if gap:
            return gap.start() + 1, brace
        end = brace
    return 0, 0


def encode_each(items: list, encoder: msgspec.json.Encoder) -> pa.Array:
    """The JSON text of each item (each one a JSON object), as an Arrow binary column. One
    encode of the whole list takes half the time of one per item: "[{a},{b}]" is cut after
    the "}" of each "},{" seam and Arrow drops the separators, unless such a seam also falls
    inside a value (a string or raw JSON), where the items are encoded one by one."""
    text = encoder.encode(items)
    marks = np.frombuffer(text, np.uint8)
    opens = np.flatnonzero(marks == ord("{"))
    seams = opens[(marks[opens - 1] == ord(",")) & (marks[opens - 2] == ord("}"))]
    if len(seams) != max(len(items) - 1, 0):
        return pa.array(list(map(encoder.encode, items)), pa.large_binary())
    # each item, then its "," (the last: its "]"); no items: one offset
    offsets = np.concatenate(([1], seams, [len(text)]))[:len(items) + 1]
    joined = pa.Array.from_buffers(pa.large_binary(), len(items), [None, pa.py_buffer(offsets), pa.py_buffer(text)])
    return pc.binary_slice(joined, 0, -1)
