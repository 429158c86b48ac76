"""Who gets which copy: manifest addresses checked, capped and filtered by allowed domain; contacts and ops."""

from __future__ import annotations

from typing import Any

from notifier.recipients import plan


def _plan(kind: str = "succeeded", emails: list[str] | None = None, **options: Any):
    settings: dict[str, Any] = {"contacts": [], "allowed_domains": [], "ops_emails": [], "max_recipients": 10}
    settings.update(options)
    job = {"id": 7, "account": "acme", "client_emails": emails if emails is not None else ["p@example.com"]}
    return plan(kind, job, **settings)


def test_manifest_addresses_only_when_all_is_well() -> None:
    result = _plan(contacts=["c@example.com"])
    assert (result.partners, result.contacts, result.ops, result.dropped) == (["p@example.com"], [], [], [])


def test_addresses_are_checked_normalised_and_deduplicated() -> None:
    result = _plan(emails=["P@Example.COM", "p@example.com", "not an address", "x@y.com\r\nBcc: z@w.com"])
    assert result.partners == ["P@example.com"]
    assert [d.address for d in result.dropped] == ["not an address", "x@y.com\\r\\nBcc: z@w.com"]
    assert all(d.reason == "not a valid email address" for d in result.dropped)


def test_never_more_than_max_recipients_manifest_addresses() -> None:
    emails = [f"p{index}@example.com" for index in range(5)]
    result = _plan(emails=emails, max_recipients=3, contacts=["c@example.com"])
    assert result.partners == emails[:3]
    assert [d.address for d in result.dropped] == emails[3:]
    assert "more than 3 addresses" in result.dropped[0].reason
    assert (result.contacts, result.contact_reason) == (["c@example.com"], "dropped")


def test_addresses_outside_the_allowed_domains_are_dropped_and_the_contacts_told() -> None:
    result = _plan(
        emails=["p@example.com", "spy@evil.example", "q@Sub.Example.com"],
        allowed_domains=["example.com"],
        contacts=["c@example.com"],
        ops_emails=["ops@example.org"],
    )
    assert result.partners == ["p@example.com"]
    assert [d.address for d in result.dropped] == ["spy@evil.example", "q@sub.example.com"]
    assert "evil.example is not one of the account's allowed domains (example.com)" in result.dropped[0].reason
    assert "spy@evil.example" not in result.everyone
    partner, contacts, ops = result.audiences({"id": 7, "account": "acme"})
    assert (partner.addresses, partner.notice) == (["p@example.com"], [])
    assert contacts.addresses == ["c@example.com"]
    assert contacts.notice[0].startswith("You receive this copy as a contact address of account acme: some of")
    assert "Not sent to spy@evil.example: evil.example is not one of" in " ".join(contacts.notice)
    assert ops.addresses == ["ops@example.org"] and "Sent to: p@example.com, c@example.com." in ops.notice


def test_contacts_stand_in_when_the_manifest_names_no_usable_address() -> None:
    missing = _plan(kind="failed", emails=[], contacts=["c@example.com"])
    assert (missing.partners, missing.contacts, missing.contact_reason) == ([], ["c@example.com"], "no_address")
    invalid = _plan(kind="failed", emails=["nope"], contacts=["c@example.com"])
    assert (invalid.contacts, invalid.contact_reason) == (["c@example.com"], "none_usable")
    nobody = _plan(kind="failed", emails=[])
    assert nobody.audiences({"id": 7}) == []


def test_contacts_hear_of_every_failure_but_not_twice() -> None:
    result = _plan(kind="failed", contacts=["c@example.com", "P@example.com"])
    assert (result.contacts, result.contact_reason) == (["c@example.com"], "failed")
    assert _plan(kind="failed", emails=["c@example.com"], contacts=["c@example.com"]).contacts == []


def test_ops_copy_skips_addresses_already_told() -> None:
    result = _plan(ops_emails=["ops@example.org", "p@example.com", "OPS@example.org"])
    assert result.ops == ["ops@example.org"]
