"""What partners really send, through SFTP to `ingestd serve`: compressed files, other timestamp forms, headers
in other cases, European spreadsheets (semicolons, decimal commas, a BOM) whose error CSV opens in columns."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Daemon
from tests.fixtures.sshkeys import sftp_batch
from tests.integration.test_e2e import ACCOUNT, Partner, cli_json, finished

EVENTS = "evt,who,t,Price,Note\n" + "".join(
    f'Purchased,u{i % 7},{1714557600 + i},{"oops" if i % 11 == 3 else f"{i}.5"},"n, {i}"\n' for i in range(300)
)
EVENTS_SPEC = {
    "evt": {"ctName": "evtName"},
    "who": {"ctName": "identity"},
    "t": {"ctName": "ts"},
    "Price": {"dataType": "FLOAT"},
}


@pytest.fixture
def partner(daemon: Daemon, keypair: tuple[Path, Path], tmp_path: Path) -> Partner:
    daemon.add_key(ACCOUNT, keypair[1])
    return Partner(daemon, keypair[0], tmp_path / "partner")


def events_manifest(file_name: str, **extra: Any) -> dict[str, Any]:
    return {"fileName": file_name, "type": "event", "clientEmail": "p@example.com", "columns": EVENTS_SPEC, **extra}


def binary(partner: Partner, name: str, data: bytes) -> Path:
    path = partner.folder / name
    path.write_bytes(data)
    return path


def fetch_error_csv(daemon: Daemon, partner: Partner, job: dict[str, Any]) -> bytes:
    target = partner.folder / f"fetched-{job['id']}.csv"
    result = sftp_batch(daemon.sftp_port, ACCOUNT, partner.key, [f'get "{job["details"]["error_csv"]}" "{target}"'])
    assert result.returncode == 0, result.stderr
    return target.read_bytes()


def all_events(daemon: Daemon) -> list[dict[str, Any]]:
    return sorted(
        (event for who in range(7) for event in cli_json(daemon, "events", "list", ACCOUNT, f"u{who}")),
        key=lambda event: (event["ts"], json.dumps(event["properties"], sort_keys=True)),
    )


def zipped(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


def test_gzip_and_zip_uploads_import_exactly_like_the_plain_file(partner: Partner, daemon: Daemon) -> None:
    partner.put(
        binary(partner, "events.csv", EVENTS.encode()), partner.file("plain.manifest", events_manifest("events.csv"))
    )
    [plain] = finished(daemon, 1)
    stored = all_events(daemon)
    assert (plain["status"], plain["rows_ingested"], plain["rows_failed"]) == ("completed_with_errors", 273, 27)
    assert len(stored) == 273
    partner.put(
        binary(partner, "events.csv.gz", gzip.compress(EVENTS.encode())),
        partner.file("gz.manifest", events_manifest("events.csv.gz")),
        binary(partner, "events.zip", zipped("events.csv", EVENTS.encode())),
        partner.file("zip.manifest", events_manifest("events.zip")),
    )
    _, gz, zp = finished(daemon, 3)
    for job in (gz, zp):
        assert (job["status"], job["rows_total"], job["rows_ingested"], job["rows_failed"]) == (
            "completed_with_errors",
            300,
            273,
            27,
        )
        # The same error rows, byte for byte.
        assert fetch_error_csv(daemon, partner, job) == fetch_error_csv(daemon, partner, plain)
    # The same events: their ids (from identity, name, ts and properties) matched, so nothing was added.
    assert all_events(daemon) == stored


def test_a_decompression_bomb_is_refused_with_a_clear_reason(partner: Partner, daemon: Daemon) -> None:
    bomb = gzip.compress(b"evt,who,t,Price,Note\n" + b"Purchased,u1,1714557600,1.5,x\n" * (3 << 20), compresslevel=9)
    assert len(bomb) < 400_000  # ~90 MiB inside
    partner.put(binary(partner, "bomb.csv.gz", bomb), partner.file("bomb.manifest", events_manifest("bomb.csv.gz")))
    [job] = finished(daemon, 1)
    assert job["status"] == "failed"
    assert job["error"].startswith("File couldn't be read: the gzip file uncompresses to more than 200 times")
    assert "decompression bomb" in job["error"]


def test_the_uncompressed_size_is_capped_by_sftp_max_file_size(
    make_daemon: Callable[..., Daemon], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    daemon = make_daemon(INGESTD_SFTP__MAX_FILE_SIZE="64KiB")
    daemon.add_key(ACCOUNT, keypair[1])
    partner = Partner(daemon, keypair[0], tmp_path / "partner")
    big = EVENTS.encode() * 20  # ~330 KiB uncompressed, ~30 KiB gzipped
    partner.put(
        binary(partner, "big.csv.gz", gzip.compress(big)), partner.file("big.manifest", events_manifest("big.csv.gz"))
    )
    [job] = finished(daemon, 1)
    assert job["status"] == "failed"
    assert "the gzip file uncompresses to more than 64 KiB, the largest data file accepted" in job["error"]
    assert job["rows_ingested"] == 0 or job["rows_ingested"] is None or job["rows_ingested"] < 300 * 20


def test_a_zip_with_two_files_fails_once(partner: Partner, daemon: Daemon) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a.csv", EVENTS)
        archive.writestr("b.csv", EVENTS)
    partner.put(binary(partner, "two.zip", out.getvalue()), partner.file("two.manifest", events_manifest("two.zip")))
    [job] = finished(daemon, 1)
    assert job["status"] == "failed"
    assert (
        job["error"]
        == "File couldn't be read: the zip file holds 2 files ('a.csv', 'b.csv'); it must hold exactly one CSV"
    )


def test_iso_8601_and_millisecond_timestamps_are_stored_as_the_same_instants(partner: Partner, daemon: Daemon) -> None:
    forms = [
        "1714557600",
        "1714557600000",
        "2024-05-01T10:00:00Z",
        "2024-05-01T12:00:00+02:00",
        "2024-05-01T05:00:00-0500",
        "2024-05-01T10:00:00.000Z",
        "$D_2024-05-01T10:00:00Z",
    ]
    rows = "".join(f"Bought,who{n},{ts},$D_{ts.removeprefix('$D_')}\n" for n, ts in enumerate(forms))
    rows += "Bought,bad,01/05/2024,x\n"
    manifest = {
        "fileName": "times.csv",
        "type": "event",
        "clientEmail": "p@example.com",
        "columns": {"e": {"ctName": "evtName"}, "i": {"ctName": "identity"}, "t": {"ctName": "ts"}},
    }
    partner.upload("times.csv", "e,i,t,When\n" + rows, "times.manifest", manifest)
    [job] = finished(daemon, 1)
    assert (job["status"], job["rows_ingested"], job["rows_failed"]) == ("completed_with_errors", 7, 1)
    for n in range(len(forms)):
        [event] = cli_json(daemon, "events", "list", ACCOUNT, f"who{n}")
        assert event["ts"].startswith("2024-05-01T10:00:00"), (forms[n], event)
        assert event["properties"]["When"] == "2024-05-01T10:00:00Z", (forms[n], event)
    text = fetch_error_csv(daemon, partner, job).decode("utf-8-sig")
    assert (
        "t: expected epoch seconds, epoch milliseconds or ISO 8601 like 2024-05-01T10:00:00Z, found '01/05/2024'"
        in text
    )


@pytest.mark.parametrize("header", ["EMAIL,AGE,CITY", " Email , Age ,City"])
def test_a_header_in_another_case_is_matched_and_the_report_says_so(
    partner: Partner, daemon: Daemon, header: str
) -> None:
    manifest = {
        "fileName": "people.csv",
        "type": "profile",
        "clientEmail": "p@example.com",
        "columns": {"email": {"ctName": "identity"}, "age": {"ctName": "Age", "dataType": "INTEGER"}},
    }
    partner.upload("people.csv", f"{header}\nann@example.com,41,Oslo\n", "people.manifest", manifest)
    [job] = finished(daemon, 1)
    assert (job["status"], job["rows_ingested"]) == ("succeeded", 1)
    assert cli_json(daemon, "profiles", "get", ACCOUNT, "ann@example.com")["properties"]["Age"] == 41
    email_column = header.split(",")[0]
    assert (
        f"the header's column '{email_column}' was matched to the manifest's 'email' ignoring case and spaces"
        in (job["details"]["problems"])
    )
    shown = daemon.cli("imports", "show", str(job["id"])).stdout
    assert "was matched to the manifest's 'age' ignoring case" in shown


def test_a_missing_mapped_column_fails_the_file_once(partner: Partner, daemon: Daemon) -> None:
    manifest = {
        "fileName": "people.csv",
        "type": "profile",
        "clientEmail": "p@example.com",
        "columns": {"email": {"ctName": "identity"}, "age": {"dataType": "INTEGER"}},
    }
    partner.upload("people.csv", "email,agee\n" + "a@x.com,1\n" * 20, "people.manifest", manifest)
    [job] = finished(daemon, 1)
    assert job["status"] == "failed" and job["rows_failed"] in (0, None)
    assert job["error"] == (
        "File couldn't be read: the manifest maps the column 'age', which the header does not have "
        "(even ignoring case); did you mean 'agee' for 'age'?"
    )


def test_a_european_file_round_trips_through_its_error_csv(partner: Partner, daemon: Daemon) -> None:
    manifest = {
        "fileName": "preise.csv",
        "type": "event",
        "clientEmail": "p@example.com",
        "decimal": ",",
        "columns": {"Ereignis": {"ctName": "evtName"}, "Kunde": {"ctName": "identity"}, "Preis": {"dataType": "FLOAT"}},
    }
    text = "Ereignis;Kunde;Preis;Stadt\nKauf;k1;12,5;Zürich\nKauf;k2;12.5;Köln\nKauf;k3;zwölf;Wien\n"
    partner.put(
        binary(partner, "preise.csv", codecs.BOM_UTF8 + text.encode()), partner.file("preise.manifest", manifest)
    )
    [job] = finished(daemon, 1)
    assert (job["status"], job["rows_ingested"], job["rows_failed"]) == ("completed_with_errors", 1, 2)
    [event] = cli_json(daemon, "events", "list", ACCOUNT, "k1")
    assert event["properties"]["Preis"] == 12.5 and event["properties"]["Stadt"] == "Zürich"
    data = fetch_error_csv(daemon, partner, job)
    # UTF-8 with a BOM, semicolons, CRLF: a European Excel opens it in columns with its umlauts.
    assert data.startswith(codecs.BOM_UTF8)
    assert data[3:].decode("utf-8").startswith("Ereignis;Kunde;Preis;Stadt;Failure Description\r\n")
    rows = list(csv.reader(io.StringIO(data[3:].decode("utf-8"), newline=""), delimiter=";"))
    assert [row[:4] for row in rows[1:]] == [["Kauf", "k2", "12.5", "Köln"], ["Kauf", "k3", "zwölf", "Wien"]]
    assert rows[1][4] == (
        "Preis: Value must be a FLOAT: a finite decimal number, found '12.5' "
        '(the manifest says "decimal": ",": write 12,5, without thousands marks)'
    )
    assert rows[2][4].startswith("Preis: Value must be a FLOAT: a finite decimal number, found 'zwölf'")
    # Fixed in place and uploaded again as it is: the Failure Description column is ignored.
    fixed = data.replace(b";12.5;", b";12,5;").replace("zwölf".encode(), b"12")
    partner.put(
        binary(partner, "preise2.csv", fixed), partner.file("preise2.manifest", {**manifest, "fileName": "preise2.csv"})
    )
    _, again = finished(daemon, 2)
    assert (again["status"], again["rows_ingested"]) == ("succeeded", 2)
    [k2] = cli_json(daemon, "events", "list", ACCOUNT, "k2")
    assert k2["properties"] == {"Preis": 12.5, "Stadt": "Köln"}


def test_a_decimal_comma_without_the_manifest_option_gets_a_hint(partner: Partner, daemon: Daemon) -> None:
    manifest = {
        "fileName": "p.csv",
        "type": "profile",
        "clientEmail": "p@example.com",
        "encoding": "cp1252",
        "columns": {"Preis": {"dataType": "FLOAT"}},
    }
    text = "identity;Preis;Stadt\na;12,5;Zürich\nb;3;Köln\n"
    partner.put(binary(partner, "p.csv", text.encode("cp1252")), partner.file("p.manifest", manifest))
    [job] = finished(daemon, 1)
    assert job["status"] == "completed_with_errors"
    data = fetch_error_csv(daemon, partner, job)
    # Back in the upload's own encoding (cp1252: no BOM) and delimiter.
    rows = list(csv.reader(io.StringIO(data.decode("cp1252"), newline=""), delimiter=";"))
    assert rows[1] == [
        "a",
        "12,5",
        "Zürich",
        "Preis: Value must be a FLOAT: a finite decimal number, found '12,5' "
        '(a decimal comma: add "decimal": "," to the manifest)',
    ]


@pytest.mark.slow
def test_a_killed_gzip_import_resumes_from_its_checkpoint_with_exact_counts(
    make_daemon: Callable[..., Daemon], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    from tests.integration.test_e2e_crash import MANIFEST, ROWS, job_row, sink_events, write_events

    daemon = make_daemon(INGESTD_JOBS__BATCH_ROWS="5000", INGESTD_JOBS__COMMIT_ROWS="15000")
    daemon.add_key(ACCOUNT, keypair[1])
    partner = Partner(daemon, keypair[0], tmp_path / "partner")
    bad = write_events(partner.folder / "big.csv")
    packed = binary(partner, "big.csv.gz", gzip.compress((partner.folder / "big.csv").read_bytes(), compresslevel=1))
    partner.put(packed, partner.file("big.manifest", {**MANIFEST, "fileName": "big.csv.gz"}))
    deadline = time.monotonic() + 120
    while not ((state := job_row(daemon)) and state[0] == "processing" and state[1] > 0):
        assert time.monotonic() < deadline, f"never saw the job processing: {state}\n{daemon.log()[-3000:]}"
        time.sleep(0.02)
    daemon.kill()
    status, ingested_at_stop = job_row(daemon) or ("?", 0)
    assert status == "processing" and 0 < ingested_at_stop < ROWS - bad, "the kill must land mid-import"
    daemon.start()
    [job] = finished(daemon, 1)
    assert (job["status"], job["rows_total"], job["rows_ingested"], job["rows_failed"]) == (
        "completed_with_errors",
        ROWS,
        ROWS - bad,
        bad,
    )
    assert sink_events(daemon) == (ROWS - bad, ROWS - bad)
    error_rows = (daemon.drop(ACCOUNT) / job["details"]["error_csv"]).read_text(encoding="utf-8-sig").splitlines()
    assert len(error_rows) == len(set(error_rows)) == bad + 1
    assert "job.resumed" in daemon.log()
