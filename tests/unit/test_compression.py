"""Compressed data files: gzip and zip (one member) read like the plain file, bombs and odd archives refused."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile

import pytest

from manifests import rules
from manifests.compression import open_stream
from manifests.validate import FileError
from tests.fixtures.engine import manifest, run

PLAIN = "identity,Age,Note\n" + "".join(f'u{i},{i if i % 9 else "x"},"n, {i}"\n' for i in range(3000))
SPEC = {"Age": {"dataType": "INTEGER"}}


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def outcome(result):
    return [(r["line"], r["ops"]) for r in result.rows], [(b.line, b.cells, b.problems) for b in result.bad]


COMPRESSED = {
    "gzip": gzip.compress(PLAIN.encode()),
    "gzip in two members": gzip.compress(PLAIN[:5000].encode()) + gzip.compress(PLAIN[5000:].encode()),
    "zip deflated": zipped({"events.csv": PLAIN.encode()}),
    "zip stored": zipped({"events.csv": PLAIN.encode()}, zipfile.ZIP_STORED),
    "zip from the macOS Finder": zipped(
        {"data/": b"", "data/events.csv": PLAIN.encode(), "__MACOSX/data/._events.csv": b"\0\5\26\7"}
    ),
    "gzip with a BOM inside": gzip.compress(b"\xef\xbb\xbf" + PLAIN.encode()),
}


@pytest.mark.parametrize("kind", list(COMPRESSED))
def test_a_compressed_file_reads_like_the_plain_one(tmp_path, kind):
    plain = run(tmp_path, PLAIN, manifest("profile", SPEC), batch_rows=700)
    packed = run(tmp_path, COMPRESSED[kind], manifest("profile", SPEC), batch_rows=700)
    assert outcome(packed) == outcome(plain)
    assert [b.rows for b in packed.batches] == [b.rows for b in plain.batches]
    # Progress is counted on the file's own (compressed) bytes.
    assert packed.batches[-1].bytes_done == len(COMPRESSED[kind])


@pytest.mark.parametrize("kind", ["gzip", "zip deflated"])
@pytest.mark.parametrize("skip", [700, 1234, 3000])
def test_resuming_a_compressed_file_skips_the_rows_done(tmp_path, kind, skip):
    whole = run(tmp_path, PLAIN, manifest("profile", SPEC), batch_rows=700)
    resumed = run(tmp_path, COMPRESSED[kind], manifest("profile", SPEC), batch_rows=700, skip_rows=skip)
    assert [r["line"] for r in resumed.rows] == [r["line"] for r in whole.rows if r["line"] > skip + 1]
    assert [b.line for b in resumed.bad] == [b.line for b in whole.bad if b.line > skip + 1]


def test_an_undecodable_byte_in_a_gzip_names_its_line(tmp_path):
    data = gzip.compress(b"identity,City\na,ok\nb,\xff\n")
    with pytest.raises(FileError, match="byte 0xff at line 3 is not valid UTF-8"):
        run(tmp_path, data, manifest("profile"))


def test_a_quote_never_closed_in_a_gzip_is_found(tmp_path):
    data = gzip.compress(b'identity,Note\na,ok\nb,"unclosed\nc,ok\n')
    with pytest.raises(FileError, match="the quoted field in the row at line 3 is never closed"):
        run(tmp_path, data, manifest("profile"), batch_rows=1)


def test_a_decompression_bomb_is_refused(tmp_path):
    bomb = gzip.compress(b"identity,Note\n" + b"a,b\n" * (20 << 20), compresslevel=9)  # 80 MiB in ~80 KiB
    assert len(bomb) * rules.MAX_RATIO < 64 << 20
    with pytest.raises(FileError) as caught:
        run(tmp_path, bomb, manifest("profile"), batch_rows=1_000_000)
    assert "uncompresses to more than 200 times its compressed size" in str(caught.value)
    assert str(caught.value).startswith("File couldn't be read: the gzip file ")


def test_the_uncompressed_size_is_capped(tmp_path):
    (tmp_path / "data.csv").write_bytes(gzip.compress(PLAIN.encode()))
    from manifests.validate import validate_csv

    with pytest.raises(FileError) as caught:
        list(validate_csv(tmp_path / "data.csv", manifest(), account="a", processing_ts=1, max_uncompressed=10_000))
    assert "the gzip file uncompresses to more than 9.8 KiB, the largest data file accepted" in str(caught.value)


def _encrypted(data: bytes) -> bytes:
    """A zip whose member says it is encrypted (zipfile cannot write one): bit 0 of both flag fields."""
    raw = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.index(signature)
        (flags,) = struct.unpack_from("<H", raw, at + offset)
        struct.pack_into("<H", raw, at + offset, flags | 1)
    return bytes(raw)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            zipped({"a.csv": b"identity\na\n", "b.csv": b"identity\nb\n"}),
            "the zip file holds 2 files ('a.csv', 'b.csv'); it must hold exactly one CSV",
        ),
        (zipped({}), "the zip file holds no file; it must hold exactly one CSV"),
        (_encrypted(zipped({"a.csv": b"identity\na\n"})), rules.FILE_ZIP_ENCRYPTED),
        (
            zipped({"a.csv": b"identity\na\n"}, zipfile.ZIP_BZIP2),
            "the zip file is compressed with bzip2; only deflate (the usual) and stored are read",
        ),
        (zipped({"a.csv": b"identity\na\n"}, zipfile.ZIP_LZMA), "the zip file is compressed with lzma"),
        (gzip.compress(PLAIN.encode())[:-4000], "the gzip file is cut short"),
        (gzip.compress(b"identity\na\n")[:-8] + b"\0\0\0\0\0\0\0\0", "the gzip file is damaged"),
        (b"PK\x03\x04garbage", "the zip file is damaged"),
    ],
    # Named by the reason, not by the bytes: those hold the time they were made (zip and gzip headers), and
    # xdist workers collecting a second apart would otherwise see different tests.
    ids=lambda value: value if isinstance(value, str) else "archive",
)
def test_archives_we_cannot_read_fail_with_a_clear_reason(tmp_path, data, reason):
    with pytest.raises(FileError) as caught:
        run(tmp_path, data, manifest("profile"))
    assert reason in str(caught.value)


def test_the_kind_comes_from_the_first_bytes_not_the_name(tmp_path):
    path = tmp_path / "upload.txt"
    path.write_bytes(gzip.compress(b"identity\na\n"))
    stream = open_stream(str(path), limit=1 << 20)
    try:
        assert stream.kind == "gzip" and stream.read(100) == b"identity\na\n"
    finally:
        stream.close()
    plain = tmp_path / "events.csv.gz"
    plain.write_bytes(b"identity\na\n")
    stream = open_stream(str(plain), limit=1 << 20)
    try:
        assert stream.kind == "plain"
    finally:
        stream.close()


@pytest.mark.parametrize("kind", ["gzip", "gzip in two members", "zip deflated", "zip stored"])
def test_the_standard_zlib_fallback_reads_the_same(tmp_path, monkeypatch, kind):
    """Where no isal wheel exists the standard library's zlib inflates (it reports what follows a member twice)."""
    import zlib

    from manifests import compression

    monkeypatch.setattr(compression, "zlib", zlib)
    path = tmp_path / "data.bin"
    path.write_bytes(COMPRESSED[kind] + (gzip.compress(b"u9,1,x\n") if kind.startswith("gzip") else b""))
    stream = open_stream(str(path), limit=1 << 30)
    try:
        data = b""
        while chunk := stream.read(1000):
            data += chunk
    finally:
        stream.close()
    assert data == PLAIN.encode() + (b"u9,1,x\n" if kind.startswith("gzip") else b"")
