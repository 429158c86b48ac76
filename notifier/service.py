"""The Notifier: notify() renders and stores in the outbox; a background sender delivers with back-off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from email.utils import parseaddr
from typing import Any

from daemon.config import Config
from daemon.errors import ConfigError
from daemon.logs import event
from daemon.metrics import OUTBOX_DEPTH
from daemon.store import StateDB
from notifier import texts
from notifier.compose import compose_email
from notifier.mailer import DeliveryError, FileMailer, SMTPMailer
from notifier.outbox import Item, Outbox
from notifier.webhooks import WebhookClient, build_body

log = logging.getLogger("ingestd.notifier")

# The sender re-reads the outbox at least this often, even without a wake-up (rows added by another process).
IDLE_POLL = 5.0
# Settled rows older than the retention are deleted this often (and at start).
PRUNE_EVERY = 3600.0
# health() reports trouble once the oldest undelivered row has failed this many times.
UNHEALTHY_AFTER = 3


def check_addresses(config: Config) -> None:
    """Refuse to start on an address that would break every email's headers; ConfigError names the key."""
    named = [("smtp.sender", config.smtp.sender)] + [("notify.ops_emails", a) for a in config.notify.ops_emails]
    for key, value in named:
        address = parseaddr(value)[1]
        local, _, domain = address.rpartition("@")
        bare_ok = "<" in value or value.strip() == address  # parseaddr quietly drops spaces of "a@b c"
        if not local or not domain or not bare_ok or not value.isprintable():
            raise ConfigError(f"{key}: expected an email address like ops@example.com, found {value!r}")


class Notifier:
    """Emails and webhooks for job events; nothing is sent that was not first stored in the outbox."""

    def __init__(self, config: Config, db: StateDB) -> None:
        check_addresses(config)
        self.config = config
        self.db = db
        self.outbox = Outbox(db)
        self.smtp = SMTPMailer(config.smtp) if config.smtp.host else None
        self.files = FileMailer(config.mail_dir)
        self.webhooks = WebhookClient(config.webhooks.secret, config.webhooks.timeout)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._drains: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._last_prune = 0.0

    # -- producer side: any thread, no network ---------------------------------------------------

    def notify(self, kind: str, job: dict[str, Any]) -> None:
        """Render the email and webhook bodies for `kind` and store them in the outbox in one transaction."""
        if kind not in texts.KINDS:
            raise ValueError(f"unknown notification kind {kind!r}; expected one of {', '.join(texts.KINDS)}")
        email = compose_email(kind, job, self.config)
        body = build_body(kind, job) if self.config.webhooks.urls else b""
        job_id = job.get("id")
        with self.db.transaction() as conn:
            if email is not None:
                Outbox.add(conn, "email", job_id, kind, ", ".join(email.recipients), email.data, email.message_id)
            for url in self.config.webhooks.urls:
                Outbox.add(conn, "webhook", job_id, kind, url, body)
        if email is None:
            event(log, "notify.no_recipients", logging.WARNING, job_id=job_id, notify_event=kind)
        self._update_depth()
        self._poke()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        await self._prune()
        due = await asyncio.to_thread(self.outbox.retry_now)
        if due:
            event(log, "notify.resuming", pending=due)
        await asyncio.to_thread(self._update_depth)
        self._runner = asyncio.create_task(self._run(), name="notifier")

    async def stop(self) -> None:
        """Let a delivery in flight finish (so it is marked sent), then stop; the rest waits in the outbox."""
        self._stopping = True
        self._poke()
        tasks = [task for task in [self._runner, *self._drains.values()] if task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.smtp.timeout + 5)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._runner = None
        self._drains.clear()
        await self.webhooks.close()

    def banner(self) -> list[str]:
        mail = self.smtp.describe() if self.smtp else self.files.describe()
        hooks = f", {len(self.config.webhooks.urls)} webhook(s)" if self.config.webhooks.urls else ""
        return [f"  mail   {mail}{hooks}"]

    def health(self) -> str | None:
        oldest = self.outbox.oldest_pending()
        if oldest is None or oldest[0] < UNHEALTHY_AFTER:
            return None
        return f"outbox: {self.outbox.depth()} waiting; last delivery error: {oldest[1]}"

    # -- sender side: the event loop ---------------------------------------------------------------

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                loop.call_soon_threadsafe(wake.set)

    async def _prune(self) -> None:
        """Settled rows follow the jobs' retention (`jobs.retention_days`, 0 keeps them)."""
        self._last_prune = time.monotonic()
        try:
            removed = await asyncio.to_thread(self.outbox.prune, self.config.jobs.retention_days)
        except Exception:  # housekeeping must not stop delivery
            log.exception("notifier: pruning the outbox failed")
            return
        if removed:
            event(log, "notify.pruned", removed=removed, retention_days=self.config.jobs.retention_days)

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            self._wake.clear()
            if time.monotonic() - self._last_prune >= PRUNE_EVERY:
                await self._prune()
            try:
                heads = await asyncio.to_thread(self.outbox.heads)
            except Exception:  # e.g. the state database locked for longer than its timeout: try again
                log.exception("notifier: reading the outbox failed")
                heads = []
            now = time.time()
            wait = IDLE_POLL
            for item in heads:
                if item.channel in self._drains:
                    continue
                if item.next_attempt <= now:
                    self._drains[item.channel] = asyncio.create_task(self._drain(item.channel))
                else:
                    wait = min(wait, item.next_attempt - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, wait))

    async def _drain(self, channel: tuple[str, str]) -> None:
        """Deliver a channel's rows oldest first until it is empty or the head must wait."""
        try:
            while not self._stopping:
                item = await asyncio.to_thread(self.outbox.head, channel)
                if item is None or item.next_attempt > time.time():
                    return
                if not await self._deliver(item):
                    return
        except Exception:
            # The state database itself failed: pause this channel a little rather than spin.
            log.exception("notifier: delivering %s failed unexpectedly", channel)
            await asyncio.sleep(1.0)
        finally:
            self._drains.pop(channel, None)
            self._poke()

    async def _deliver(self, item: Item) -> bool:
        """One attempt; True when the row is settled (sent, or refused for good)."""
        try:
            if item.kind == "email":
                where = await self._send_email(item)
            else:
                status = await self.webhooks.post(item.target, item.payload, item.event, item.id)
                where = f"{item.target} ({status})"
        except Exception as caught:  # anything unexpected is retried with back-off, never a hot loop
            exc = caught if isinstance(caught, DeliveryError) else DeliveryError(f"unexpected error: {caught!r}")
            if not isinstance(caught, DeliveryError):
                log.exception("notifier: unexpected error delivering outbox row %s", item.id)
            if exc.permanent:
                await asyncio.to_thread(self.outbox.mark_failed, item.id, str(exc))
                event(log, "notify.refused", logging.ERROR, **self._fields(item), error=str(exc))
                await asyncio.to_thread(self._update_depth)
                return True
            cap = self.config.webhooks.max_retry_delay if item.kind == "webhook" else self.config.smtp.max_retry_delay
            attempts, delay = await asyncio.to_thread(self.outbox.mark_retry, item.id, str(exc), cap)
            event(
                log,
                "notify.retry",
                logging.WARNING,
                **self._fields(item),
                attempts=attempts,
                retry_in_s=round(delay, 1),
                error=str(exc),
            )
            return False
        await asyncio.to_thread(self.outbox.mark_sent, item.id)
        event(log, "notify.sent", **self._fields(item), attempts=item.attempts + 1, via=where)
        await asyncio.to_thread(self._update_depth)
        return True

    async def _send_email(self, item: Item) -> str:
        recipients = [address.strip() for address in item.target.split(",") if address.strip()]
        if self.smtp is None:
            name = f"{item.id:06d}-job{item.job_id}-{item.event}.eml"
            path = await asyncio.to_thread(self.files.write, name, item.payload)
            return str(path)
        sender = parseaddr(self.config.smtp.sender)[1] or self.config.smtp.sender
        refused = await asyncio.to_thread(self.smtp.send, sender, recipients, item.payload)
        if refused:
            event(log, "notify.recipients_refused", logging.WARNING, outbox_id=item.id, refused=", ".join(refused))
        return f"{self.config.smtp.host}:{self.config.smtp.port}"

    @staticmethod
    def _fields(item: Item) -> dict[str, Any]:
        fields: dict[str, Any] = {"outbox_id": item.id, "channel": item.kind, "job_id": item.job_id}
        fields["notify_event"] = item.event
        if item.kind == "email":
            fields["to"] = item.target
            fields["message_id"] = item.message_id
        else:
            fields["url"] = item.target
        return fields

    def _update_depth(self) -> None:
        try:
            OUTBOX_DEPTH.set(self.outbox.depth())
        except Exception:  # a metric must never break delivery; the next update corrects it
            log.debug("outbox depth not updated", exc_info=True)
