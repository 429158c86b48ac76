"""Through `ingestd serve` on the Elasticsearch sink (noida-db): refused rows keep their cells, duplicates are counted."""

from __future__ import annotations

import csv
import io
import json
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.daemon import Daemon
from tests.fixtures.noida import Noida
from tests.integration.test_e2e import ACCOUNT, Partner, cli_json, finished, wait_for
from tests.integration.test_e2e_crash import job_row
from tests.integration.test_e2e_elasticsearch import es_daemon

JAN = 1578503667  # 2020-01-08T17:14:27Z
FEB = JAN + 40 * 86400


def event_manifest(file_name: str) -> dict[str, object]:
    return {"fileName": file_name, "type": "event", "clientEmail": "partner@example.com"}


def test_rows_elasticsearch_refuses_keep_their_cells_and_stored_ones_count_as_present(
    make_daemon: Callable[..., Daemon], noida: Noida, es_prefix: str, keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    daemon = es_daemon(make_daemon, noida, es_prefix)
    daemon.add_key(ACCOUNT, keypair[1])
    partner = Partner(daemon, keypair[0], tmp_path / "partner")
    partner.upload(
        "jan.csv", f"identity,evtName,ts,Price\njohn,Bought,{JAN},5\n", "jan.manifest", event_manifest("jan.csv")
    )
    [first] = finished(daemon, 1)
    assert first["status"] == "succeeded"
    # An operator makes January's index read-only; the first import is searchable by now.
    urllib.request.urlopen(urllib.request.Request(f"{noida.url}/_refresh", method="POST"), timeout=30).close()
    block = urllib.request.Request(
        f"{noida.url}/{es_prefix}-events-2020.01/_settings",
        data=json.dumps({"index.blocks.write": True}).encode(),
        method="PUT",
        headers={"content-type": "application/json"},
    )
    urllib.request.urlopen(block, timeout=30).close()
    rows = f"identity,evtName,ts,Price\njohn,Bought,{JAN},5\njohn,Bought,{JAN},=7\njohn,Bought,{FEB},8\n"
    partner.upload("mix.csv", rows, "mix.manifest", event_manifest("mix.csv"))
    _, second = finished(daemon, 2)
    assert second["status"] == "completed_with_errors"
    assert (second["rows_ingested"], second["rows_failed"], second["rows_duplicate"]) == (2, 1, 1)
    text = (daemon.drop(ACCOUNT) / second["details"]["error_csv"]).read_text(
        encoding="utf-8-sig"
    )  # a BOM, as the upload was UTF-8
    header, row = list(csv.reader(io.StringIO(text)))
    assert header == ["identity", "evtName", "ts", "Price", "Failure Description"]
    # The original cells (neutralised as every error CSV cell is), not an empty row.
    assert row[:4] == ["john", "Bought", str(JAN), "'=7"] and "Elasticsearch refused" in row[4]


def test_an_import_paused_by_an_elasticsearch_outage_can_be_cancelled(
    make_daemon: Callable[..., Daemon], make_noida: Callable[[], Noida], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    server = make_noida()
    daemon = es_daemon(
        make_daemon,
        server,
        "paused",
        INGESTD_JOBS__BATCH_ROWS="500",
        INGESTD_JOBS__COMMIT_ROWS="500",
        INGESTD_ELASTICSEARCH__MAX_RETRY_DELAY="1s",
    )
    daemon.add_key(ACCOUNT, keypair[1])
    partner = Partner(daemon, keypair[0], tmp_path / "partner")
    rows = "".join(f"user{i % 100},Viewed,{1_600_000_000 + i}\n" for i in range(20_000))
    partner.upload("views.csv", "identity,evtName,ts\n" + rows, "views.manifest", event_manifest("views.csv"))
    wait_for("the import under way", lambda: (job_row(daemon) or ("", 0))[1] > 0, daemon)
    server.stop(signal.SIGINT)
    [job_id] = [job["id"] for job in cli_json(daemon, "imports", "list")]
    wait_for("the pause", lambda: cli_json(daemon, "imports", "show", str(job_id))["details"]["paused"], daemon)
    result = daemon.cli("imports", "cancel", str(job_id))
    assert result.returncode == 0, result.stderr
    # Ended while Elasticsearch is still away: the batch in hand was not written, the checkpoint's rows stay.
    [job] = finished(daemon, 1)
    assert job["status"] == "cancelled" and job["details"]["paused"] is None
    assert 0 < job["rows_ingested"] == job["rows_total"] < 20_000
    assert [entry["event"] for entry in job["details"]["timeline"]] == [
        "queued",
        "picked_up",
        "paused",
        "cancelled",
        "finished",
    ]
