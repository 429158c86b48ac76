"""Hostile manifests and files, without a server: true reasons, bounded work, formulas neutralised."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import sqlite3
from pathlib import Path

import pytest

from daemon.errors import RetryableError
from daemon.jobs.files import NotRegular, open_regular, pause_reason, read_bounded
from daemon.jobs.paths import partner_error_name
from manifests.errors_csv import neutralise
from manifests.model import ManifestError, _recover_emails, load_manifest
from manifests.validate import FileError, validate_csv
from tests.fixtures.engine import manifest, run

BASE = {"fileName": "data.csv", "type": "profile", "clientEmail": "partner@example.com"}


def problems(raw: bytes, **limits: int) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(raw, **limits)
    return caught.value.problems


@pytest.mark.parametrize(
    ("raw", "start"),
    [
        (b'{"fileName": "\\udcff.csv", "type": "profile", "clientEmail": "a@example.com"}', "fileName: '\\xff.csv'"),
        (b'{"fileName": "a.csv", "type": "profile", "clientEmail": "a@example.com", "\\udc80": 1}', "the key '\\x80'"),
        (
            b'{"fileName": "a.csv", "type": "profile", "clientEmail": "a@example.com",'
            b' "columns": {"x": {"ctName": "\\ud800"}}}',
            "columns.x.ctName: '\\ud800'",
        ),
    ],
)
def test_lone_surrogates_are_a_manifest_problem(raw: bytes, start: str) -> None:
    [problem] = problems(raw)
    assert problem.startswith(start) and "is not valid Unicode text" in problem
    problem.encode("utf-8")  # storable as it is


def test_a_surrogate_pair_is_ordinary_text() -> None:
    raw = json.dumps({**BASE, "columns": {"x": {"ctName": "\U0001f600"}}}).encode()  # "\ud83d\ude00"
    assert load_manifest(raw).columns["x"].ct_name == "\U0001f600"


def test_a_manifest_over_the_size_limit_is_refused_unread() -> None:
    raw = json.dumps({**BASE, "columns": {"x" * 2000: {}}}).encode()
    assert problems(raw, max_size=1024) == [
        "the manifest is larger than 1 KiB (it was not read); a manifest is a small JSON object"
    ]
    assert load_manifest(raw, max_size=len(raw)).file_name == "data.csv"


@pytest.mark.parametrize(
    "emails", [",".join(f"u{i}@example.com" for i in range(11)), [f"u{i}@x.io" for i in range(11)]]
)
def test_client_email_names_at_most_max_recipients(emails: object) -> None:
    raw = json.dumps({**BASE, "clientEmail": emails}).encode()
    with pytest.raises(ManifestError) as caught:
        load_manifest(raw, max_recipients=10)
    assert caught.value.problems == ["clientEmail: at most 10 addresses, found 11"]
    assert caught.value.client_emails == []  # too many to tell: the account's contacts are told instead
    assert len(load_manifest(raw, max_recipients=11).client_emails) == 11


def test_problems_are_bounded_in_number_and_length() -> None:
    raw = json.dumps({**BASE, **{f"k{i}" + "y" * 5000: 1 for i in range(50)}}).encode()
    found = problems(raw)
    assert len(found) == 21 and found[-1] == "... and 30 more problems"
    assert all(len(problem) <= 300 for problem in found)


def test_recovering_addresses_is_linear_and_still_finds_them() -> None:
    text = '{"clientEmail": "' + "a" * 1_000_000 + " ops@example.com, x.y@sub.example.co.uk"
    assert _recover_emails(text) == []  # beyond the bounded prefix
    text = '{"clientEmail": "a@example.com, ' + "b" * 50_000 + '@@ c.d@example.org", "type": 1'
    assert _recover_emails(text) == ["a@example.com", "c.d@example.org"]


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+31", "'+31"),
        ("-5", "'-5"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'=x", "''=x"),  # already looks neutralised: one more, so the round trip gives it back
        ("'plain", "'plain"),
        ("plain=", "plain="),
        ("", ""),
    ],
)
def test_formula_cells_are_neutralised(cell: str, written: str) -> None:
    assert neutralise(cell) == written


def test_an_error_csv_uploaded_again_imports_the_original_cells(tmp_path: Path) -> None:
    cells = ['=HYPERLINK("http://x","y")', "-5", "'=x", "@a", "\tt"]
    header = ["identity", "A", "B", "C", "D", "E", "Failure Description"]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow([neutralise(c) for c in header[:-1]] + [header[-1]])
    writer.writerow(["kate", *[neutralise(c) for c in cells], "identity: missing"])
    result = run(tmp_path, text.getvalue(), manifest("profile"))
    assert result.batches[0].header == header[:-1]
    [row] = result.rows
    ops = {prop: value for _, prop, value in row["ops"]}
    assert ops == dict(zip(header[1:-1], cells, strict=True))


def test_a_ragged_row_with_a_huge_field_is_a_file_problem(tmp_path: Path) -> None:
    text = "identity,Name\njohn,John\nann," + "x" * (200 << 10) + ",extra\n"
    with pytest.raises(FileError, match="line 3: a field is longer than 128 KiB"):
        run(tmp_path, text, manifest("profile"))


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (",".join(f"c{i}" for i in range(100_000)), "the header has 100000 columns; at most 260 are allowed"),
        ("identity," + "n" * (5 << 20), "the header row is longer than 4 MiB"),
        ("identity," + "n" * 2000, "column 2 of the header row is longer than 1024 characters"),
    ],
)
def test_headers_too_wide_or_long_are_refused_first(tmp_path: Path, header: str, detail: str) -> None:
    with pytest.raises(FileError) as caught:
        run(tmp_path, header + "\njohn,x\n", manifest("profile"))
    assert caught.value.detail == detail


def test_links_and_special_files_are_not_opened(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_text("secret")
    (tmp_path / "link").symlink_to(target)
    os.link(target, tmp_path / "second")
    os.mkfifo(tmp_path / "fifo")
    for name, kind in [("link", "a symbolic link"), ("second", "has 2 names"), ("fifo", "a special file")]:
        with pytest.raises(NotRegular, match=kind):
            open_regular(tmp_path / name)
    (tmp_path / "data.csv").symlink_to(target)
    with pytest.raises(FileError, match="not a regular file"):
        list(validate_csv(tmp_path / "data.csv", manifest("profile"), account="acme", processing_ts=0))
    plain = tmp_path / "plain"
    plain.write_bytes(b"x" * 100)
    assert len(read_bounded(plain, 10)[0]) == 11  # one byte more than allowed shows it is too large


def test_full_disks_and_locks_pause_rather_than_fail() -> None:
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/jobs/1/errors.csv")
    assert (pause_reason(full) or "").startswith("paused: no space left for the file /data/jobs/1/errors.csv")
    locked = sqlite3.OperationalError("database is locked")
    assert "locked" in (pause_reason(locked) or "")
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.Error as exc:
            raise RetryableError("sqlite sink: full") from exc
    except RetryableError as wrapped:
        assert "no space left for the data store" in (pause_reason(wrapped) or "")
    # Even a rollback error raised while handling SQLITE_FULL shows the cause (the chain is searched).
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.Error:
            raise sqlite3.OperationalError("cannot rollback - no transaction is active") from None
    except sqlite3.Error as masked:
        assert "no space left" in (pause_reason(masked) or "")
    assert pause_reason(ValueError("x")) is None


def test_partner_error_names_fit_in_name_max() -> None:
    name = partner_error_name(123456, "d" * 241 + ".csv")
    assert len(f".{name}.part".encode()) <= 255 and name.endswith(".errors.csv")
    assert partner_error_name(7, "é" * 200 + ".csv").encode().decode("utf-8")  # cut on a character boundary
    assert partner_error_name(42, "profiles.csv") == "42-profiles.errors.csv"


def test_an_address_longer_than_smtp_can_carry_is_a_manifest_problem() -> None:
    from manifests.model import ManifestError, load_manifest

    raw = '{"fileName": "a.csv", "type": "event", "clientEmail": "a@' + "b." * 200_000 + 'com"}'
    try:
        load_manifest(raw.encode())
    except ManifestError as exc:
        assert exc.problems[0].startswith("clientEmail: expected email addresses, found 'a@b.b.")
        assert len(exc.problems[0]) < 200  # the value is quoted shortened, not whole
    else:
        raise AssertionError("a 400 KB address was accepted")
