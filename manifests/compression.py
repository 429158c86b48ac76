"""The data file's bytes: plain, gzip or zip (one member), told apart by their first bytes and decompressed as a stream."""

from __future__ import annotations

import errno
import os
import stat
import struct
import zipfile
from typing import BinaryIO, cast

from manifests import rules
from manifests.batch import FileError

try:  # ISA-L: several times faster than zlib at inflating; same API
    from isal import isal_zlib as zlib
except ImportError:  # no wheel for this platform
    import zlib  # type: ignore[no-redef]

# The same class from either module; isal's stub declares `error` as an instance, hence the cast.
_ZLIB_ERROR = cast("type[Exception]", zlib.error)

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a member first; or an empty archive
_READ = 1 << 20  # compressed bytes read at a time
# O_NONBLOCK: a FIFO must not hang the worker; O_NOFOLLOW: a link is not the partner's file.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local file header (30 bytes)


def open_regular(path: str) -> BinaryIO:
    """The file opened for reading, refused when it is a link, a folder or a special file."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise FileError(rules.FILE_NOT_REGULAR) from None
        raise FileError(f"the data file cannot be opened ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileError(rules.FILE_NOT_REGULAR)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class Stream:
    """The file's uncompressed bytes, read forward; `bytes_done` counts the bytes of the file itself read so far
    (for a compressed file: compressed bytes, which is what progress is measured against)."""

    kind = "plain"

    def __init__(self, handle: BinaryIO, limit: int) -> None:
        self.handle = handle
        self.limit = limit  # the most uncompressed bytes accepted
        self.bytes_out = 0
        self._closed_at = 0
        self._done_at: int | None = None  # the file's size, once every byte that matters is read

    @property
    def bytes_done(self) -> int:
        if self._done_at is not None:
            return self._done_at
        return self._closed_at if self.handle.closed else self.handle.tell()

    def read(self, size: int) -> bytes:
        return self.handle.read(size)

    def rewind(self) -> None:
        """Back to the first byte (to count something in the text again)."""
        self.handle.seek(0)
        self.bytes_out = 0

    def close(self) -> None:
        if not self.handle.closed:
            self._closed_at = self.handle.tell()
            self.handle.close()


class _Inflating(Stream):
    """Common to gzip and zip: compressed bytes in `[start, end)` of the file, inflated with a size cap."""

    def __init__(self, handle: BinaryIO, limit: int, *, start: int, end: int, wbits: int) -> None:
        super().__init__(handle, limit)
        self.start, self.end, self.wbits = start, end, wbits
        size = end - start
        # A decompression bomb: refused once it expands far beyond what real CSVs do (5-20x, 100x at most).
        self.ratio_limit = max(rules.MAX_RATIO * size, rules.RATIO_FLOOR)
        self.rewind()

    def rewind(self) -> None:
        self.handle.seek(self.start)
        self.bytes_out = 0
        self._done_at = None
        self._decompressor = zlib.decompressobj(self.wbits)
        self._tail = b""  # compressed bytes given to the decompressor and not yet used
        self._done = False
        self._crc = 0

    def _more(self) -> bytes:
        left = self.end - self.handle.tell()
        return self.handle.read(min(_READ, left)) if left > 0 else b""

    def read(self, size: int) -> bytes:
        while not self._done:
            data = self._tail or self._more()
            if not data:
                # Output zlib holds back from input it already took (a long run of one byte, say).
                out = self._decompressor.decompress(b"", size)
                if out:
                    self._count(out)
                    return out
                self._finish()
                break
            out = self._decompressor.decompress(data, size)
            self._tail = self._decompressor.unconsumed_tail
            if self._decompressor.eof:
                self._next_member(self._decompressor.unused_data)
            if out:
                self._count(out)
                return out
        return b""

    def _count(self, out: bytes) -> None:
        self.bytes_out += len(out)
        if self.bytes_out > self.limit:
            raise FileError(rules.file_uncompressed_too_large(self.kind, self.limit))
        if self.bytes_out > self.ratio_limit:
            raise FileError(rules.file_bomb(self.kind, self.end - self.start))

    def _next_member(self, unused: bytes) -> None:
        """The end of the compressed data (gzip: maybe another member follows)."""
        self._done = True
        self._done_at = os.fstat(self.handle.fileno()).st_size  # a zip's central directory counts as read

    def _finish(self) -> None:
        if not self._decompressor.eof:
            raise FileError(rules.file_truncated(self.kind))
        self._done = True
        self._done_at = os.fstat(self.handle.fileno()).st_size


class GzipStream(_Inflating):
    """A gzip file, also several members one after the other (as `cat a.gz b.gz` makes); CRCs checked by zlib."""

    kind = "gzip"

    def __init__(self, handle: BinaryIO, limit: int, size: int) -> None:
        super().__init__(handle, limit, start=0, end=size, wbits=31)

    def read(self, size: int) -> bytes:
        try:
            return super().read(size)
        except _ZLIB_ERROR as exc:
            raise FileError(rules.file_damaged(self.kind, str(exc))) from None

    def _next_member(self, unused: bytes) -> None:
        rest = unused  # everything after the member (zlib repeats it in unconsumed_tail; isal does not)
        if not rest and self.handle.tell() >= self.end:
            self._done = True
            return
        self._decompressor = zlib.decompressobj(self.wbits)
        self._tail = rest
        if rest.strip(b"\0") == b"" and self.handle.tell() >= self.end:
            self._done = True  # zero padding after the last member (tape-style writers)


class ZipStream(_Inflating):
    """The one member of a zip file, deflated or stored; its CRC is checked at the end."""

    kind = "zip"

    def __init__(self, handle: BinaryIO, limit: int, info: zipfile.ZipInfo, start: int) -> None:
        self.info = info
        super().__init__(handle, limit, start=start, end=start + info.compress_size, wbits=-15)

    def rewind(self) -> None:
        super().rewind()
        self._checked = False

    def read(self, size: int) -> bytes:
        if self.info.compress_type == zipfile.ZIP_STORED:
            out = self._stored(size)
        else:
            try:
                out = super().read(size)
            except _ZLIB_ERROR as exc:
                raise FileError(rules.file_damaged(self.kind, str(exc))) from None
        if out:
            self._crc = zlib.crc32(out, self._crc)
        elif not self._checked:
            self._checked = True
            if self._crc != self.info.CRC:
                raise FileError(rules.file_damaged(self.kind, "the CRC of the member does not match"))
        return out

    def _stored(self, size: int) -> bytes:
        left = self.end - self.handle.tell()
        out = self.handle.read(min(size, left)) if left > 0 else b""
        if out:
            self._count(out)
        elif left > 0:
            raise FileError(rules.file_truncated(self.kind))
        else:
            self._done_at = os.fstat(self.handle.fileno()).st_size
        return out


def open_stream(path: str, *, limit: int) -> Stream:
    """The data file as a Stream of its uncompressed bytes, by what its first bytes say it is."""
    handle = open_regular(path)
    try:
        head = handle.read(4)
        handle.seek(0)
        size = os.fstat(handle.fileno()).st_size
        if head.startswith(GZIP_MAGIC):
            return GzipStream(handle, limit, size)
        if head in ZIP_MAGIC:
            info, start = _zip_member(handle)
            return ZipStream(handle, limit, info, start)
        return Stream(handle, limit)
    except BaseException:
        handle.close()
        raise


def _zip_member(handle: BinaryIO) -> tuple[zipfile.ZipInfo, int]:
    """The one data member of a zip and where its compressed bytes start; FileError for anything else.

    Folders and the `__MACOSX/` copies the macOS Finder adds are not members that count."""
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FileError(rules.file_damaged("zip", str(exc))) from None
    members = [info for info in archive.infolist() if not info.is_dir() and not info.filename.startswith("__MACOSX/")]
    if len(members) != 1:
        raise FileError(rules.file_zip_members([info.filename for info in members]))
    info = members[0]
    if info.flag_bits & 0x1:
        raise FileError(rules.FILE_ZIP_ENCRYPTED)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise FileError(rules.file_zip_method(info.compress_type))
    handle.seek(info.header_offset)
    header = handle.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise FileError(rules.file_damaged("zip", "the member's local header is missing"))
    fields = _LOCAL_HEADER.unpack(header)
    start = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]
    return info, start
