"""The delivery channels of the outbox: one entry per `outbox.kind`, each saying how its rows are grouped
(the channel key: rows of one key are delivered in order, one at a time), how long its back-off may grow,
how a delivery is logged, and how it is made.

To add a channel (say Slack): write a class with these members, add it to CHANNELS, and queue rows with
`Outbox.add(conn, "<kind>", ...)`; docs/architecture.md has the steps.
"""

from __future__ import annotations

from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from daemon.config import Config
    from notifier.outbox import Item
    from notifier.service import Notifier

# What a delivery returns: where it went (for the log), and the recipients refused with (code, text).
Delivered = tuple[str, dict[str, tuple[int, str]]]


class Channel(Protocol):
    kind: str
    # Whether the row's target is a list of recipients that are accepted or refused one by one (email).
    per_recipient: bool

    def key(self, target: str) -> str:
        """The channel key of a row with this target: rows of one key are delivered in order, one at a time."""
        ...

    def max_retry_delay(self, config: Config) -> float: ...

    def log_fields(self, item: Item) -> dict[str, Any]: ...

    async def deliver(self, notifier: Notifier, item: Item) -> Delivered:
        """One attempt; raises notifier.mailer.DeliveryError when it failed."""
        ...


class EmailChannel:
    kind = "email"
    per_recipient = True

    def key(self, target: str) -> str:
        """An email's channel is its (first) recipient's domain, lower-case: one slow domain holds up only itself."""
        first = target.split(",")[0]
        return "email:" + parseaddr(first)[1].rpartition("@")[2].strip().lower()

    def max_retry_delay(self, config: Config) -> float:
        return config.smtp.max_retry_delay

    def log_fields(self, item: Item) -> dict[str, Any]:
        return {"to": item.target, "message_id": item.message_id}

    async def deliver(self, notifier: Notifier, item: Item) -> Delivered:
        return await notifier.send_email(item)


class WebhookChannel:
    kind = "webhook"
    per_recipient = False

    def key(self, target: str) -> str:
        return f"webhook:{target}"

    def max_retry_delay(self, config: Config) -> float:
        return config.webhooks.max_retry_delay

    def log_fields(self, item: Item) -> dict[str, Any]:
        return {"url": item.target}

    async def deliver(self, notifier: Notifier, item: Item) -> Delivered:
        status = await notifier.webhooks.post(item.target, item.payload, item.event, item.id)
        return f"{item.target} ({status})", {}


CHANNELS: dict[str, Channel] = {channel.kind: channel for channel in (EmailChannel(), WebhookChannel())}


def channel(kind: str) -> Channel:
    """The channel of outbox rows of `kind`; KeyError names the kinds known (a row written by a newer version)."""
    try:
        return CHANNELS[kind]
    except KeyError:
        raise KeyError(f"unknown outbox kind {kind!r}; this version delivers {', '.join(sorted(CHANNELS))}") from None


def email_channel(address: str) -> str:
    return CHANNELS["email"].key(address)


def webhook_channel(url: str) -> str:
    return CHANNELS["webhook"].key(url)
