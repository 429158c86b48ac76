"""The Notifier: notify() renders and stores in the outbox; a background sender delivers with back-off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any

from daemon.config import Config
from daemon.errors import ConfigError
from daemon.logs import event
from daemon.metrics import OUTBOX_DEPTH, OUTBOX_OLDEST_PENDING
from daemon.shutdown import Shutdown
from daemon.store import StateDB
from daemon.store.accounts import AccountStore
from daemon.units import duration_text
from notifier import ratelimit, texts
from notifier.channels import CHANNELS, email_channel, webhook_channel
from notifier.channels import channel as channel_of
from notifier.compose import Email, compose_emails, plan_for
from notifier.mailer import DeliveryError, FileMailer, SMTPMailer
from notifier.outbox import Item, Outbox, epoch, record_notified
from notifier.recipients import Plan
from notifier.slots import FairSlots
from notifier.webhooks import WebhookClient, build_body

log = logging.getLogger("ingestd.notifier")

# The sender re-reads the outbox at least this often, even without a wake-up (rows added by another process).
IDLE_POLL = 5.0
# Settled rows older than the retention are deleted this often (and at start).
PRUNE_EVERY = 3600.0
# health() reports a destination stuck once a row still waiting has failed this many times ...
UNHEALTHY_AFTER = 3
# ... and was queued at least this many seconds ago: a short relay hiccup is not worth a page.
STUCK_AFTER = 600.0
# Held-back failures are looked at for their hourly summary this often.
SUMMARY_EVERY = 30.0
# SMTP conversations at once, in their own threads: many destinations retrying against a relay that
# hangs must neither open a connection each nor take the threads the rest of the daemon works in.
# They are shared fairly over accounts (notifier/slots.py): one account's slow destinations never hold them all.
SMTP_CONNECTIONS = 4


def check_addresses(config: Config) -> None:
    """Refuse to start on an address that would break every email's headers; ConfigError names the key."""
    named = [("smtp.sender", config.smtp.sender)] + [("notify.ops_emails", a) for a in config.notify.ops_emails]
    for key, value in named:
        address = parseaddr(value)[1]
        local, _, domain = address.rpartition("@")
        bare_ok = "<" in value or value.strip() == address  # parseaddr quietly drops spaces of "a@b c"
        if not local or not domain or not bare_ok or not value.isprintable():
            raise ConfigError(f"{key}: expected an email address like ops@example.com, found {value!r}")


def notified_entry(kind: str, recipients: Plan, emailed: bool, held_back: bool) -> dict[str, Any]:
    """One details.notified entry: whom this event's email went to — the partner's addresses and the
    account's contacts in `to`, ops apart — or, with `nobody`, why no partner or contact was told."""
    told = [*recipients.partners, *recipients.contacts] if emailed and not held_back else []
    entry: dict[str, Any] = {
        "event": kind,
        "to": told,
        "ops": list(recipients.ops) if emailed and not held_back else [],
    }
    if recipients.contacts and told:
        entry["contacts"] = list(recipients.contacts)
    notes = [texts.DROPPED_LINE.format(address=d.address, reason=d.reason) for d in recipients.dropped]
    if held_back:
        notes.insert(0, texts.NOTIFIED_HELD_BACK)
    elif not told:
        notes.insert(0, texts.NOTIFIED_NOBODY)
    if not told:
        entry["nobody"] = True
    if notes:
        entry["note"] = " ".join(notes)
    return entry


class Notifier:
    """Emails and webhooks for job events; nothing is sent that was not first stored in the outbox."""

    def __init__(self, config: Config, db: StateDB, shutdown: Shutdown | None = None) -> None:
        check_addresses(config)
        self.config = config
        # The service's stop deadline (shared with the other components); its own when run alone.
        self._own_shutdown = shutdown is None
        self.shutdown = shutdown if shutdown is not None else Shutdown(config.jobs.shutdown_grace)
        self.db = db
        self.outbox = Outbox(db)
        self.smtp = SMTPMailer(config.smtp) if config.smtp.host else None
        self._smtp_pool: ThreadPoolExecutor | None = None
        self._smtp_slots = FairSlots(SMTP_CONNECTIONS)
        self.files = FileMailer(config.mail_dir)
        self.webhooks = WebhookClient(config.webhooks.secret, config.webhooks.timeout)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self.accounts = AccountStore(db)
        self._drains: dict[str, asyncio.Task[None]] = {}
        self._last_prune = 0.0
        self._last_summary = 0.0
        self._oldest_created: float | None = None

    # -- producer side: any thread, no network ---------------------------------------------------

    def notify(self, kind: str, job: dict[str, Any]) -> None:
        """Render the emails and webhook bodies for `kind` and store them in the outbox in one transaction.

        One message per audience (partner, the account's contacts, ops), one outbox row per recipient
        domain; a failure beyond the account's hourly budget is held back for the summary instead."""
        if kind not in texts.KINDS:
            raise ValueError(f"unknown notification kind {kind!r}; expected one of {', '.join(texts.KINDS)}")
        account = str(job.get("account") or "")
        recipients = plan_for(kind, job, self.config, self.accounts.contacts(account) if account else ([], []))
        emails = compose_emails(kind, job, self.config, recipients=recipients)
        body = build_body(kind, job) if self.config.webhooks.urls else b""
        job_id = job.get("id")
        held_back = False
        with self.db.transaction() as conn:
            if emails and kind == "failed" and account:
                audiences = {"partners": recipients.partners, "contacts": recipients.contacts, "ops": recipients.ops}
                limit = self.config.notify.max_failure_emails
                held_back = not ratelimit.take(conn, account, job_id, limit, audiences, time.time())
            if not held_back:
                for email in emails:
                    self.queue_email(conn, email, job_id, kind, account)
            if isinstance(job_id, int):
                record_notified(conn, job_id, notified_entry(kind, recipients, bool(emails), held_back))
            self.queue_webhooks(conn, job_id, kind, body, account)
        for dropped in recipients.dropped:
            event(
                log,
                "notify.address_dropped",
                logging.WARNING,
                job_id=job_id,
                notify_event=kind,
                account=account,
                address=dropped.address,
                reason=dropped.reason,
            )
        if held_back:
            event(
                log,
                "notify.held_back",
                logging.WARNING,
                job_id=job_id,
                account=account,
                notify_event=kind,
                limit=self.config.notify.max_failure_emails,
            )
        elif not emails:
            event(log, "notify.no_recipients", logging.WARNING, job_id=job_id, notify_event=kind)
        self.wake()

    def wake(self) -> None:
        """Rows were added to the outbox: update its gauge and wake the sender (any thread)."""
        self._update_depth()
        self._poke()

    def queue_webhooks(self, conn: Any, job_id: int | None, kind: str, body: bytes, account: str) -> None:
        """One row per configured webhook URL, inside the caller's transaction."""
        for url in self.config.webhooks.urls:
            Outbox.add(conn, "webhook", job_id, kind, url, body, channel=webhook_channel(url), account=account)

    def queue_email(self, conn: Any, email: Email, job_id: int | None, kind: str, account: str) -> None:
        """One row per recipient domain (its own channel), or one row when emails become files."""
        if self.smtp is None:
            groups = {"eml": email.recipients}
        else:
            groups = {}
            for address in email.recipients:
                groups.setdefault(email_channel(address), []).append(address)
        for channel, addresses in groups.items():
            Outbox.add(
                conn,
                "email",
                job_id,
                kind,
                ", ".join(addresses),
                email.data,
                email.message_id,
                channel=channel,
                account=account,
            )

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._own_shutdown:  # started again after a stop: a new deadline for the next one
            self.shutdown = Shutdown(self.config.jobs.shutdown_grace)
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        await self._prune()
        due = await asyncio.to_thread(self.outbox.retry_now)
        if due:
            event(log, "notify.resuming", pending=due)
        await asyncio.to_thread(self._update_depth)
        OUTBOX_OLDEST_PENDING.set_function(self._oldest_age)
        self._runner = asyncio.create_task(self._run(), name="notifier")

    async def stop(self) -> None:
        """Let deliveries in flight finish (so they are marked sent) in what remains of the stop's deadline
        (`jobs.shutdown_grace` from its start), then abandon the rest. Abandoning one is safe: its row is still
        pending in the outbox and is delivered again after the restart; only a message the server accepted in
        that very moment is sent twice. No new delivery starts once the stop has begun."""
        self.shutdown.begin()
        self._stopping = True
        self._poke()
        tasks = [task for task in [self._runner, *self._drains.values()] if task is not None]
        if tasks:
            # No attempt outlasts its timeout (+ the thread's start): no need to wait longer than that.
            longest = max(self.config.smtp.timeout, self.config.webhooks.timeout) + 5
            pending = await self.shutdown.wait(tasks, limit=longest)
            for task in pending:
                task.cancel()
            if pending and self.smtp is not None:
                # A cancelled task leaves its thread blocked on the relay (and the interpreter joins pool
                # threads at exit): cut those connections so the threads end now, the rows untouched.
                cut = self.smtp.abort()
                if cut:
                    event(log, "notify.abandoned", logging.WARNING, conversations=cut)
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._runner = None
        self._drains.clear()
        await self.webhooks.close()
        if self._smtp_pool is not None:
            self._smtp_pool.shutdown(wait=False, cancel_futures=True)
            self._smtp_pool = None

    def banner(self) -> list[str]:
        mail = self.smtp.describe() if self.smtp else self.files.describe()
        hooks = f", {len(self.config.webhooks.urls)} webhook(s)" if self.config.webhooks.urls else ""
        return [f"  mail   {mail}{hooks}"]

    async def health(self) -> str | None:
        return await asyncio.to_thread(self.health_reason)

    def health_reason(self) -> str | None:
        """Why the outbox is stuck, or None: some row still waiting failed UNHEALTHY_AFTER times and was
        queued more than STUCK_AFTER seconds ago (the destination has been refusing for minutes)."""
        stuck = self.outbox.stuck(UNHEALTHY_AFTER, STUCK_AFTER)
        if stuck is None:
            return None
        channels, row = stuck
        age = max(0.0, time.time() - epoch(row["created_at"]))
        others = f" (and {channels - 1} more destinations)" if channels > 1 else ""
        return (
            f"outbox: {row['channel']} stuck for {duration_text(age)}{others}, {row['attempts']} attempts,"
            f" {self.outbox.depth()} waiting; last delivery error: {row['last_error']}"
        )

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
        try:
            await asyncio.to_thread(ratelimit.prune, self.db, time.time())
        except Exception:
            log.exception("notifier: pruning the failure budget failed")

    async def summarise(self) -> int:
        """Queue the hourly summary of every account whose held-back failures are due; returns how many."""
        self._last_summary = time.monotonic()
        queued = 0
        for account in await asyncio.to_thread(ratelimit.due, self.db, time.time()):
            count = await asyncio.to_thread(self._summarise, account)
            if count:
                queued += 1
                event(log, "notify.summary", logging.WARNING, account=account, held_back=count)
        if queued:
            await asyncio.to_thread(self._update_depth)
            self._poke()
        return queued

    def _summarise(self, account: str) -> int:
        with self.db.transaction() as conn:
            rows = ratelimit.claim(conn, account, time.time())
            if rows:
                for email in ratelimit.compose_summary(account, rows, self.config, datetime.now(UTC)):
                    self.queue_email(conn, email, None, "failures_summary", account)
        return len(rows)

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            self._wake.clear()
            if time.monotonic() - self._last_prune >= PRUNE_EVERY:
                await self._prune()
            if time.monotonic() - self._last_summary >= SUMMARY_EVERY:
                try:
                    await self.summarise()
                except Exception:  # a summary must not stop delivery; tried again next time
                    log.exception("notifier: queueing failure summaries failed")
            try:
                heads = await asyncio.to_thread(self.outbox.heads)
                await asyncio.to_thread(self._update_depth)  # rows other processes settled or added
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

    async def _drain(self, channel: str) -> None:
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
        refused: dict[str, tuple[int, str]] = {}
        if item.kind not in CHANNELS:  # written by a newer version: never guessed to be a webhook
            error = f"unknown outbox kind {item.kind!r}; this version delivers {', '.join(sorted(CHANNELS))}"
            await asyncio.to_thread(self.outbox.mark_failed, item.id, error, None)
            event(log, "notify.refused", logging.ERROR, outbox_id=item.id, channel=item.channel, error=error)
            return True
        try:
            where, refused = await channel_of(item.kind).deliver(self, item)
        except Exception as caught:  # anything unexpected is retried with back-off, never a hot loop
            exc = caught if isinstance(caught, DeliveryError) else DeliveryError(f"unexpected error: {caught!r}")
            if not isinstance(caught, DeliveryError):
                log.exception("notifier: unexpected error delivering outbox row %s", item.id)
            if exc.refused:
                return await self._settle_recipients(item, exc.refused, accepted=False)
            if exc.permanent:
                given_up = {rcpt: str(exc) for rcpt in item.recipients} if channel_of(item.kind).per_recipient else None
                await asyncio.to_thread(self.outbox.mark_failed, item.id, str(exc), given_up)
                event(log, "notify.refused", logging.ERROR, **self._fields(item), error=str(exc))
                await asyncio.to_thread(self._update_depth)
                return True
            attempts, delay = await asyncio.to_thread(self.outbox.mark_retry, item.id, str(exc), self._cap(item))
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
        if refused:
            return await self._settle_recipients(item, refused, accepted=True, via=where)
        await asyncio.to_thread(self.outbox.mark_sent, item.id)
        event(log, "notify.sent", **self._fields(item), attempts=item.attempts + 1, via=where)
        await asyncio.to_thread(self._update_depth)
        return True

    async def _settle_recipients(
        self, item: Item, refused: dict[str, tuple[int, str]], *, accepted: bool, via: str = ""
    ) -> bool:
        """Some recipients refused: 5xx ones are given up for good (recorded), 4xx ones tried again in this row."""
        permanent = {rcpt: f"{code} {text}" for rcpt, (code, text) in refused.items() if code >= 500}
        temporary = {rcpt: f"{code} {text}" for rcpt, (code, text) in refused.items() if code < 500}
        for rcpt, answer in permanent.items():
            event(log, "notify.refused", logging.ERROR, **{**self._fields(item), "to": rcpt}, error=answer)
        if temporary:
            if permanent:
                await asyncio.to_thread(self.outbox.record_undelivered, item.id, permanent)
            error = "; ".join(f"{rcpt}: {answer}" for rcpt, answer in temporary.items())
            remaining = [rcpt for rcpt in item.recipients if rcpt in temporary] or list(temporary)
            attempts, delay = await asyncio.to_thread(
                self.outbox.mark_partial, item.id, remaining, error, self._cap(item)
            )
            event(
                log,
                "notify.retry",
                logging.WARNING,
                **{**self._fields(item), "to": ", ".join(remaining)},
                attempts=attempts,
                retry_in_s=round(delay, 1),
                error=error,
            )
            return False
        if accepted:
            await asyncio.to_thread(self.outbox.mark_sent_except, item.id, permanent)
            event(log, "notify.sent", **self._fields(item), attempts=item.attempts + 1, via=via)
        else:
            error = "refused for good: " + "; ".join(f"{rcpt}: {answer}" for rcpt, answer in permanent.items())
            await asyncio.to_thread(self.outbox.mark_failed, item.id, error, permanent)
        await asyncio.to_thread(self._update_depth)
        return True

    def _cap(self, item: Item) -> float:
        return channel_of(item.kind).max_retry_delay(self.config)

    async def send_email(self, item: Item) -> tuple[str, dict[str, tuple[int, str]]]:
        if self.smtp is None:
            about = f"job{item.job_id}" if item.job_id is not None else str(item.account or "account")
            name = f"{item.id:06d}-{about}-{item.event}.eml"
            path = await asyncio.to_thread(self.files.write, name, item.payload)
            return str(path), {}
        sender = parseaddr(self.config.smtp.sender)[1] or self.config.smtp.sender
        if self._smtp_pool is None:
            self._smtp_pool = ThreadPoolExecutor(SMTP_CONNECTIONS, thread_name_prefix="ingestd-smtp")
        loop = asyncio.get_running_loop()
        async with self._smtp_slots.hold(item.account):
            if self._stopping:  # waited for a conversation until the stop began: the row waits for the restart
                raise asyncio.CancelledError
            refused = await loop.run_in_executor(self._smtp_pool, self.smtp.send, sender, item.recipients, item.payload)
        return f"{self.config.smtp.host}:{self.config.smtp.port}", refused

    @staticmethod
    def _fields(item: Item) -> dict[str, Any]:
        fields: dict[str, Any] = {"outbox_id": item.id, "channel": item.channel, "job_id": item.job_id}
        fields["notify_event"] = item.event
        return {**fields, **channel_of(item.kind).log_fields(item)}

    def _update_depth(self) -> None:
        try:
            OUTBOX_DEPTH.set(self.outbox.depth())
            self._oldest_created = self.outbox.oldest_pending_created()
        except Exception:  # a metric must never break delivery; the next update corrects it
            log.debug("outbox depth not updated", exc_info=True)

    def _oldest_age(self) -> float:
        """ingestd_outbox_oldest_pending_seconds at scrape time, from the last look at the outbox."""
        created = self._oldest_created
        return max(0.0, time.time() - created) if created is not None else 0.0
