"""Webhooks against a real local HTTP server (aiohttp): JSON body, HMAC signature, retries with back-off."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from notifier.outbox import Outbox
from notifier.webhooks import verify
from tests.fixtures.common import free_port
from tests.fixtures.smtp import job, make_notifier, notifier_config, outbox_rows, running, wait_until


class HookReceiver:
    """An HTTP server on its own loop thread; answers with `statuses` in turn, then 200."""

    def __init__(self, port: int | None = None, statuses: list[int] | None = None) -> None:
        self.port = port or free_port()
        self.statuses = list(statuses or [])
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/ingestd"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self.lock:
            self.calls.append((dict(request.headers), body))
            status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok" if status < 300 else "receiver broken")

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def up() -> None:
            app = web.Application()
            app.router.add_post("/hooks/ingestd", self._handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(up(), self._loop).result(30)

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(30)
        self._loop.close()
        self._loop = None

    def wait_for(self, count: int, timeout: float = 30) -> list[tuple[dict[str, str], bytes]]:
        def enough() -> list[tuple[dict[str, str], bytes]] | None:
            with self.lock:
                return list(self.calls) if len(self.calls) >= count else None

        return wait_until(enough, timeout, what=f"{count} webhook calls")


@pytest.fixture
def receiver() -> Iterator[HookReceiver]:
    server = HookReceiver()
    server.start()
    yield server
    server.stop()


SECRET = "s3cret-shared-with-the-receiver"


def test_events_are_posted_as_signed_json(data_dir: Path, receiver: HookReceiver) -> None:
    config = notifier_config(data_dir, INGESTD_WEBHOOKS__URLS=receiver.url, INGESTD_WEBHOOKS__SECRET=SECRET)
    notifier = make_notifier(config)
    with running(notifier):
        notifier.notify("picked_up", job())
        failed = job(status="failed", error="No data file found", problems=["events.csv did not arrive"])
        notifier.notify("failed", failed)
        (picked_headers, picked_body), (failed_headers, failed_body) = receiver.wait_for(2)
    # What a receiver does: recompute the HMAC over the raw body with the shared secret.
    expected = "sha256=" + hmac.new(SECRET.encode(), failed_body, hashlib.sha256).hexdigest()
    assert failed_headers["X-Ingestd-Signature"] == expected
    assert verify(SECRET, picked_body, picked_headers["X-Ingestd-Signature"])
    assert not verify("another secret", picked_body, picked_headers["X-Ingestd-Signature"])
    assert failed_headers["Content-Type"] == "application/json"
    assert (picked_headers["X-Ingestd-Event"], failed_headers["X-Ingestd-Event"]) == ("picked_up", "failed")
    body = json.loads(failed_body)
    assert body["event"] == "failed"
    assert body["job"]["id"] == 7 and body["job"]["account"] == "acme" and body["job"]["file_name"] == "events.csv"
    assert body["job"]["error"] == "No data file found" and body["job"]["failure"] == "no_data_file"
    assert body["job"]["problems"] == ["events.csv did not arrive"]
    # The same event also went out as an email (.eml here: no SMTP host).
    wait_until(lambda: len(list(config.mail_dir.glob("*.eml"))) == 2, what="two .eml files")


def test_a_failing_receiver_gets_the_same_delivery_again(data_dir: Path) -> None:
    receiver = HookReceiver(statuses=[500, 503])
    receiver.start()
    try:
        config = notifier_config(data_dir, INGESTD_WEBHOOKS__URLS=receiver.url, INGESTD_WEBHOOKS__SECRET=SECRET)
        notifier = make_notifier(config)
        with running(notifier):
            notifier.notify("succeeded", job(status="succeeded", rows_total=3, rows_ingested=3))
            calls = receiver.wait_for(3)
            row = wait_until(
                lambda: next((r for r in outbox_rows(config) if r["kind"] == "webhook" and r["sent_at"]), None),
                what="webhook marked sent",
            )
    finally:
        receiver.stop()
    assert len({body for _, body in calls}) == 1
    assert len({headers["X-Ingestd-Delivery"] for headers, _ in calls}) == 1
    assert all(verify(SECRET, body, headers["X-Ingestd-Signature"]) for headers, body in calls)
    assert row["attempts"] == 3 and "503" in row["last_error"]


def test_a_receiver_that_is_down_gets_the_event_when_it_is_back(data_dir: Path) -> None:
    receiver = HookReceiver()  # not started: connection refused
    config = notifier_config(data_dir, INGESTD_WEBHOOKS__URLS=receiver.url)
    notifier = make_notifier(config)
    with running(notifier):
        notifier.notify("picked_up", job())
        wait_until(
            lambda: any(r["kind"] == "webhook" and r["attempts"] >= 2 for r in outbox_rows(config)),
            what="failed webhook attempts",
        )
        # Emails do not wait for a broken webhook.
        wait_until(lambda: list(config.mail_dir.glob("*.eml")), what="the email")
        receiver.start()
        try:
            ((headers, body),) = receiver.wait_for(1)
        finally:
            receiver.stop()
    assert json.loads(body)["event"] == "picked_up"
    assert "X-Ingestd-Signature" not in headers  # no secret configured: nothing to sign with


def test_every_configured_url_gets_every_event(data_dir: Path) -> None:
    first, second = HookReceiver(), HookReceiver(statuses=[500])
    first.start()
    second.start()
    try:
        config = notifier_config(data_dir, INGESTD_WEBHOOKS__URLS=f"{first.url},{second.url}")
        notifier = make_notifier(config)
        with running(notifier):
            notifier.notify("picked_up", job())
            notifier.notify("progress", job(progress={"rows_done": 10, "fraction": 0.5, "eta_seconds": 20}))
            to_first = first.wait_for(2)
            to_second = second.wait_for(3)
    finally:
        first.stop()
        second.stop()
    assert [json.loads(body)["event"] for _, body in to_first] == ["picked_up", "progress"]
    assert [json.loads(body)["event"] for _, body in to_second] == ["picked_up", "picked_up", "progress"]
    assert json.loads(to_first[1][1])["job"]["progress"] == {"rows_done": 10, "fraction": 0.5, "eta_seconds": 20}


def test_an_outbox_row_of_a_kind_this_version_does_not_know_fails_and_is_never_posted(
    data_dir: Path, receiver: HookReceiver
) -> None:
    # A row a newer version queued (say a Slack channel) after a downgrade: no webhook guess, a recorded reason,
    # and the rows queued after it on its channel still go out.
    config = notifier_config(data_dir, INGESTD_WEBHOOKS__URLS=receiver.url)
    notifier = make_notifier(config)
    with notifier.db.transaction() as conn:
        Outbox.add(conn, "slack", 7, "picked_up", receiver.url, b"{}", channel=f"webhook:{receiver.url}")
    with running(notifier):
        notifier.notify("picked_up", job())
        ((headers, body),) = receiver.wait_for(1)
        failed = wait_until(
            lambda: next((r for r in outbox_rows(config) if r["kind"] == "slack" and r["failed_at"]), None),
            what="the unknown row marked failed",
        )
    assert headers["X-Ingestd-Event"] == "picked_up" and json.loads(body)["event"] == "picked_up"
    assert failed["last_error"] == "unknown outbox kind 'slack'; this version delivers email, webhook"
    assert failed["sent_at"] is None
