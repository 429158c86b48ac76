"""Who gets which copy of an email: the manifest's addresses (checked, capped, filtered by allowed domain),
the account's contacts, and ops — each audience its own message, so nobody sees another's addresses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daemon.store.accounts import address_domain, normalize_address
from daemon.text import printable
from notifier import texts


@dataclass(frozen=True)
class Dropped:
    address: str  # as the manifest wrote it, made printable
    reason: str


@dataclass(frozen=True)
class Audience:
    name: str  # "partner", "contacts" or "ops"
    addresses: list[str]
    notice: list[str] = field(default_factory=list)  # lines shown above the body


@dataclass(frozen=True)
class Plan:
    partners: list[str]  # the manifest's addresses that are used
    contacts: list[str]  # the account's contacts getting their own copy (empty: none)
    ops: list[str]  # ops addresses getting their own copy
    dropped: list[Dropped]
    contact_reason: str | None  # a key of texts.CONTACT_REASONS when contacts get a copy

    @property
    def everyone(self) -> list[str]:
        return [*self.partners, *self.contacts, *self.ops]

    def audiences(self, job: dict[str, Any]) -> list[Audience]:
        values = {"account": job.get("account") or "?", "job_id": job.get("id")}
        dropped = [texts.DROPPED_LINE.format(address=d.address, reason=d.reason) for d in self.dropped]
        sent_to = texts.SENT_TO.format(addresses=", ".join(self.partners)) if self.partners else texts.SENT_TO_NOBODY
        found = []
        if self.partners:
            found.append(Audience("partner", self.partners))
        if self.contacts and self.contact_reason:
            reason = texts.CONTACT_REASONS[self.contact_reason]
            notice = [texts.CONTACT_NOTICE.format(reason=reason, **values), sent_to, *dropped]
            found.append(Audience("contacts", self.contacts, notice))
        if self.ops:
            others = [*self.partners, *self.contacts]
            ops_sent_to = texts.SENT_TO.format(addresses=", ".join(others)) if others else texts.SENT_TO_NOBODY
            found.append(Audience("ops", self.ops, [texts.OPS_NOTICE.format(**values), ops_sent_to, *dropped]))
        return found


def plan(
    kind: str,
    job: dict[str, Any],
    *,
    contacts: list[str],
    allowed_domains: list[str],
    ops_emails: list[str],
    max_recipients: int,
) -> Plan:
    """The audiences of one email. Manifest addresses that are invalid, beyond `max_recipients` or outside
    the allowed domains are dropped (never emailed); the contacts are told when any was, when none is left,
    and about every failure."""
    raw = [str(address).strip() for address in job.get("client_emails") or [] if str(address).strip()]
    seen: set[str] = set()
    valid: list[str] = []
    dropped: list[Dropped] = []
    for address in raw:
        try:
            clean = normalize_address(address)
        except ValueError:
            dropped.append(Dropped(printable(address)[:200], texts.DROPPED_REASONS["invalid"]))
            continue
        if clean.lower() not in seen:
            seen.add(clean.lower())
            valid.append(clean)
    # Defence in depth: the manifest layer refuses more, but a recovered or older manifest may name more.
    for address in valid[max_recipients:]:
        dropped.append(Dropped(address, texts.DROPPED_REASONS["too_many"].format(limit=max_recipients)))
    valid = valid[:max_recipients]
    allowed = {domain.lower() for domain in allowed_domains}
    partners = []
    for address in valid:
        domain = address_domain(address)
        if allowed and domain not in allowed:
            why = texts.DROPPED_REASONS["domain"].format(domain=domain, allowed=", ".join(allowed_domains))
            dropped.append(Dropped(address, why))
        else:
            partners.append(address)

    if not partners:
        reason: str | None = "none_usable" if raw else "no_address"
    elif dropped:
        reason = "dropped"
    elif kind == "failed":
        reason = "failed"
    else:
        reason = None
    taken = {address.lower() for address in partners}
    told: list[str] = []
    if reason is not None:
        for address in contacts:
            # A contact among the partners already has the email, unless it must learn what was dropped.
            if address.lower() in taken and not dropped:
                continue
            if address.lower() not in {a.lower() for a in told}:
                told.append(address)
    taken |= {address.lower() for address in told}
    ops: list[str] = []
    for address in ops_emails:
        address = str(address).strip()
        if address and address.lower() not in taken:
            taken.add(address.lower())
            ops.append(address)
    return Plan(partners, told, ops, dropped, reason if told else None)
