"""The gzip form of a snapshot body, compressed piece by piece so that a rebuild after a small
change compresses only the pieces that changed. It exists apart from the serializer and the
cache because it is plain deflate bookkeeping: it knows nothing of the snapshot's JSON, only
pieces of bytes with keys that say when a piece is the same as last time."""

from __future__ import annotations

import struct
import zlib
from typing import Any, Protocol

# A piece of a serialized body: a key that stands for its bytes (equal keys, equal bytes; None
# for a piece never reused), and where those bytes are in the body.
Piece = tuple[Any, int, int]


class DeflatedMemo(Protocol):
    """Where the compressed pieces of the previous body are kept (`splice.SnapshotMemo`)."""

    deflated: dict[Any, bytes]


# What zlib writes before a gzip stream with mtime 0 at level 1 (gzip.compress(…, mtime=0)
# is zlib.compress with wbits=31), and the final, empty deflate block.
_GZIP_HEADER = zlib.compress(b"", 1, wbits=31)[:10]
_FINAL_BLOCK = zlib.compressobj(1, zlib.DEFLATED, -15).flush()


def gzip_body(raw: bytes, pieces: list[Piece], memo: DeflatedMemo | None = None) -> bytes:
    """A gzip member of `raw` whose deflate stream is each piece compressed on its own (a fresh
    compressor, ended with a sync flush: byte-aligned, and referring to nothing before it),
    one after the other, as pigz does. A piece whose key the memo holds from the previous
    build is not compressed again; after a sign-in that is all but one piece of the users
    and all of the grants. Level 1: a third of the CPU of level 6 for a body about a fifth
    larger; this runs after every change, and C1 polls far less often than webhooks change
    things."""
    known = memo.deflated if memo is not None else {}
    current: dict[Any, bytes] = {}
    view = memoryview(raw)
    out = [_GZIP_HEADER]
    for key, start, end in pieces:
        deflated = known.get(key) if key is not None else None
        if deflated is None:
            compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
            deflated = compressor.compress(view[start:end]) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if key is not None:
            current[key] = deflated
        out.append(deflated)
    if memo is not None:
        memo.deflated = current
    out.append(_FINAL_BLOCK)
    out.append(struct.pack("<LL", zlib.crc32(raw), len(raw) & 0xFFFFFFFF))
    return b"".join(out)
