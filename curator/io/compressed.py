"""Compressed JSONL that fails loudly when it is cut short.

gzip raises EOFError where a file ends inside its stream. zstandard's stream reader does not: it
returns what it could decode and stops, so a half-downloaded `.jsonl.zst` reads as a shorter file (a
single-block file as no records at all) and the run reports success. `ZstdReader` decodes frame by
frame and raises EOFError there too.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import IO, Any

from fsspec.utils import infer_compression

from curator.io.paths import open_url

CHUNK = 1 << 17  # compressed bytes per read from the source
# compressed bytes per decompress call: a call returns all it decodes, and a 4-byte zstd block (RLE) can
# stand for 128 KiB, so this bounds what one call holds in memory (~40 MiB for a file of such blocks;
# ~4 KiB for ordinary JSONL)
FEED = 1 << 10


class ZstdReader(io.RawIOBase):
    """The decompressed bytes of a zstd stream of one or more frames; EOFError where the source ends
    inside a frame."""

    def __init__(self, source: IO[bytes], name: str) -> None:
        import zstandard

        self.source, self.name = source, name
        self.context = zstandard.ZstdDecompressor()
        self.frame = self.context.decompressobj()
        self.in_frame = False  # bytes of an unfinished frame were fed
        self.pending, self.offset = b"", 0  # decompressed bytes not yet handed on
        self.compressed, self.fed = b"", 0  # compressed bytes read, and how many were decompressed
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while self.offset >= len(self.pending):
            if self.ended:
                return 0
            if self.fed >= len(self.compressed):
                self.compressed, self.fed = self.source.read(CHUNK), 0
                if not self.compressed:
                    if self.in_frame:
                        raise EOFError(
                            f"Compressed file ended before the end of its zstd frame: {self.name} is "
                            "truncated (an incomplete download or copy?)"
                        )
                    self.ended = True
                    return 0
            piece = self.compressed[self.fed : self.fed + FEED]
            self.fed += len(piece)
            self.pending, self.offset = self._decode(piece), 0
        size = min(len(buffer), len(self.pending) - self.offset)
        buffer[:size] = memoryview(self.pending)[self.offset : self.offset + size]
        self.offset += size
        return size

    def _decode(self, data: bytes) -> bytes:
        """`data`'s decompressed bytes, starting a new frame wherever one ends."""
        out = []
        while data:
            out.append(self.frame.decompress(data))
            self.in_frame = not self.frame.eof
            if not self.frame.eof:
                break
            data = self.frame.unused_data  # the next frame's first bytes, if any
            self.frame = self.context.decompressobj()
        return b"".join(out)


@contextlib.contextmanager
def open_lines(part: Any) -> Iterator[IO[bytes]]:
    """A JSONL file's (or part's) bytes, decompressed, to iterate by line; a compressed file cut short
    raises EOFError naming it, whatever its codec."""
    zstd = infer_compression(part.path) == "zstd"
    codec = None if zstd else "infer"
    with open_url(part.path, "rb", part.file.storage_options, compression=codec) as opened:
        # zstandard's reader has no readline: a buffer gives every decompressor line iteration
        if zstd:
            handle = io.BufferedReader(ZstdReader(opened, part.path), buffer_size=CHUNK)
        else:
            handle = io.BufferedReader(opened) if part.file.compressed else opened
        try:
            yield handle
        except EOFError as err:
            if zstd:
                raise
            raise EOFError(f"{err}: {part.path} is truncated (an incomplete download or copy?)") from err
