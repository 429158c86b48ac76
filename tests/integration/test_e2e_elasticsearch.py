"""End to end on the Elasticsearch sink (noida-db): the samples, and an outage that pauses an import."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Daemon
from tests.fixtures.noida import Noida
from tests.integration.test_e2e import ACCOUNT, Partner, cli_json, finished, import_samples, wait_for
from tests.integration.test_e2e_crash import job_row

ROWS = 20_000


def es_daemon(make_daemon: Callable[..., Daemon], server: Noida, prefix: str, **env: str) -> Daemon:
    return make_daemon(
        INGESTD_SINK__DRIVER="elasticsearch",
        INGESTD_ELASTICSEARCH__URL=server.url,
        INGESTD_ELASTICSEARCH__INDEX_PREFIX=prefix,
        **env,
    )


def es(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_the_reference_samples_end_as_documented_on_elasticsearch(
    make_daemon: Callable[..., Daemon], noida: Noida, es_prefix: str, keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    daemon = es_daemon(make_daemon, noida, es_prefix)
    daemon.add_key(ACCOUNT, keypair[1])
    import_samples(Partner(daemon, keypair[0], tmp_path / "partner"), daemon)


@pytest.mark.slow
def test_an_elasticsearch_outage_pauses_the_import_and_loses_nothing(
    make_daemon: Callable[..., Daemon], make_noida: Callable[[], Noida], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    server = make_noida()
    daemon = es_daemon(
        make_daemon,
        server,
        "outage",
        INGESTD_JOBS__BATCH_ROWS="500",
        INGESTD_JOBS__COMMIT_ROWS="500",
        INGESTD_ELASTICSEARCH__MAX_RETRY_DELAY="1s",
    )
    daemon.add_key(ACCOUNT, keypair[1])
    partner = Partner(daemon, keypair[0], tmp_path / "partner")
    rows = "".join(f"user{i % 100},Viewed,{1_600_000_000 + i},{i}\n" for i in range(ROWS))
    manifest = {
        "fileName": "views.csv",
        "type": "event",
        "clientEmail": "partner@example.com",
        "columns": {"event": {"ctName": "evtName"}, "when": {"ctName": "ts", "dataType": "LONG"}},
    }
    partner.upload("views.csv", "identity,event,when,Page\n" + rows, "views.manifest", manifest)

    wait_for("the import under way", lambda: (job_row(daemon) or ("", 0))[1] > 0, daemon)
    server.stop(signal.SIGINT)
    [job_id] = [job["id"] for job in cli_json(daemon, "imports", "list")]

    def paused() -> dict[str, Any] | None:
        job = cli_json(daemon, "imports", "show", str(job_id))
        return job if job["details"]["paused"] else None

    job = wait_for("the job to say it is paused", paused, daemon)
    # Paused, not failed: the status stays processing and the log says why.
    assert job["status"] == "processing" and "elasticsearch" in job["details"]["paused"]
    assert "job.paused" in daemon.log()

    server.start()
    [job] = finished(daemon, 1)
    assert job["status"] == "succeeded" and job["details"]["paused"] is None
    assert (job["rows_total"], job["rows_ingested"], job["rows_failed"]) == (ROWS, ROWS, 0)
    es(f"{server.url}/outage-events*/_refresh", "POST")
    assert es(f"{server.url}/outage-events*/_count")["count"] == ROWS
