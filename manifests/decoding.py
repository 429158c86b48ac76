"""Decoding a data file's bytes to the UTF-8 text the CSV parser reads: BOM dropped, other encodings transcoded."""

from __future__ import annotations

import codecs
import contextlib
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

from manifests import rules
from manifests.batch import FileError
from manifests.compression import Stream

_PEEK = 64 << 10
_RECOUNT = 16 << 20  # read size when counting in the file again
_STALL = 0.5  # seconds a read waits at most while the parser asks for a block


class Decoded(io.RawIOBase):
    """The raw file as UTF-8 bytes for pyarrow: BOM dropped, other encodings transcoded, bad bytes located."""

    def __init__(self, stream: Stream, encoding: str | None, *, ahead: int | None = None) -> None:
        super().__init__()
        self.stream = stream
        # read() calls answered beyond the blocks the parser asked for (parsing()); None: not bounded.
        self._ahead = ahead
        self._gate = threading.Condition()
        self._reads = 0  # read() calls answered
        self._parsed = 0  # parsing() calls finished
        self._parsing_since: float | None = None  # when the parsing() under way started
        self._released = False
        self.bytes_read = 0  # uncompressed bytes read so far
        self.quotes = False  # a quote has been read: a value may hold a newline
        self._quote_count = 0  # transcoded files only: UTF-8 ones count theirs when asked (odd_quotes)
        self._lines = 0  # transcoded files only: newlines before the current chunk, to place an undecodable byte
        self._out = b""
        self._last = b""
        self._eof = False
        head = b""
        while len(head) < 4 and (more := stream.read(4 - len(head))):
            head += more
        self.bytes_read = len(head)
        self.bom = head.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        if encoding in (None, "utf-8") and head.startswith(codecs.BOM_UTF8):
            head = head[3:]
        elif encoding is None and head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            encoding = "utf-16"  # a UTF-16 byte order mark is unambiguous, even when not declared
        if encoding == "utf-16" and head[:2] not in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            encoding = "utf-16-le"  # no byte order mark: Windows' order, the usual one
        self.codec = encoding or "utf-8"
        self.shown = rules.ENCODINGS.get(self.codec, self.codec)
        self._decoder = codecs.getincrementaldecoder(self.codec)("strict")
        big_endian = self.codec == "utf-16-be" or (self.codec == "utf-16" and head[:2] == codecs.BOM_UTF16_BE)
        self._newline = {True: b"\x00\n", False: b"\n\x00"}[big_endian] if self.codec.startswith("utf-16") else b"\n"
        self._pending = head

    @property
    def bytes_done(self) -> int:
        """Bytes of the file itself read so far (compressed ones for a compressed file)."""
        return self.stream.bytes_done

    def readable(self) -> bool:
        return True

    def _convert(self, raw: bytes, final: bool) -> bytes:
        try:
            if self.codec == "utf-8":
                # Valid ASCII needs no decoding; otherwise decode only to check and discard the text.
                if not raw.isascii() or final or self._decoder.getstate()[0]:
                    self._decoder.decode(raw, final)
                out = raw
            else:
                out = self._decoder.decode(raw, final).encode("utf-8")
        except UnicodeDecodeError as exc:
            data = exc.object
            if self.codec == "utf-8":
                # The decoder's input (its held-back bytes, then raw) is the file's bytes up to bytes_read.
                line = self._newlines_before(self.bytes_read - len(data) + exc.start) + 1
            else:
                line = self._lines + bytes(data[: exc.start]).count(self._newline) + 1
            byte = data[exc.start] if exc.start < len(data) else 0
            raise FileError(rules.file_undecodable(byte, line, self.shown)) from None
        except UnicodeError:
            raise FileError(rules.file_not_encoded(self.shown)) from None
        if self.codec == "utf-8":
            # Counting newlines and quotes of every block costs a quarter of the parse; only errors need them.
            self.quotes = self.quotes or b'"' in out
        else:
            self._lines += raw.count(self._newline)
            self._quote_count += out.count(b'"')
            self.quotes = self._quote_count > 0
        return out

    def _count_in_file(self, needle: bytes, end: int | None = None) -> int:
        """Occurrences of a byte in the file's first `end` bytes (all of it when None), read again from disk."""
        self.stream.rewind()
        count = 0
        left = end
        while left is None or left > 0:
            block = self.stream.read(_RECOUNT if left is None else min(_RECOUNT, left))
            if not block:
                break
            count += block.count(needle)
            left = None if left is None else left - len(block)
        return count

    def _newlines_before(self, position: int) -> int:
        return self._count_in_file(b"\n", position)

    def odd_quotes(self) -> bool:
        """Whether the text holds an odd number of double quotes (UTF-8: counted now, from the file)."""
        if self.codec != "utf-8":
            return self._quote_count % 2 == 1
        # A byte order mark holds no quote, so the file's bytes count the same as the text's.
        return self.quotes and self._count_in_file(b'"') % 2 == 1

    def _fill(self, size: int) -> None:
        while len(self._out) < size and not self._eof:
            fresh = self.stream.read(max(size - len(self._out), _PEEK))  # a block read whole, not re-sliced
            self.bytes_read += len(fresh)
            raw, self._pending = self._pending + fresh, b""
            if not raw:
                self._eof = True
                self._emit(self._convert(b"", True))
                if self._last not in (b"", b"\n"):
                    self._emit(b"\n")  # pyarrow cannot read a one-line file without its line end
                break
            self._emit(self._convert(raw, False))

    def _emit(self, out: bytes) -> None:
        if out:
            self._out += out
            self._last = out[-1:]

    def peek(self, size: int = _PEEK) -> bytes:
        """The first bytes of converted text, without consuming them."""
        self._fill(size)
        return self._out[:size]

    @contextlib.contextmanager
    def parsing(self) -> Iterator[None]:
        """Around each call for the parser's next block (see `ahead`)."""
        with self._gate:
            self._parsing_since = time.monotonic()
            self._gate.notify_all()
        try:
            yield
        finally:
            with self._gate:
                self._parsing_since = None
                self._parsed += 1
                self._gate.notify_all()

    def release(self) -> None:
        """The reader is closing: a read waiting, and every read after, ends the file (not read on to its end)."""
        with self._gate:
            self._released = True
            self._gate.notify_all()

    def _wait_for_room(self) -> bool:
        """pyarrow's streaming CSV reader reads the file in a background thread up to 32 blocks ahead of the
        parsing: 128 MiB of text held per import, most of a big file's first 128 MiB. So a read waits while it
        is `ahead` reads past the blocks asked for (block k is parsed with the start of k + 1). Should the
        parser ever need more than that, a read waits no longer than _STALL while a block is asked for."""
        if self._ahead is None:
            return True
        with self._gate:
            while not self._released and self._reads >= self._parsed + self._ahead:
                since = self._parsing_since
                if since is not None and time.monotonic() - since >= _STALL:
                    break
                self._gate.wait(timeout=_STALL / 4)
            self._reads += 1
            return not self._released

    def read(self, size: int = -1) -> bytes:
        if not self._wait_for_room():
            return b""
        if size is None or size < 0:
            size = 1 << 62
            self._fill(size)
        else:
            self._fill(size)
        out, self._out = self._out[:size], self._out[size:]
        return out

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
