"""Accounts and their SSH public keys: parsing, strength rules, and the store the SFTP login reads."""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import Any

import asyncssh

from daemon.errors import NotFoundError, UsageError
from daemon.store.db import StateDB

# \Z, not $: "$" also matches before a trailing newline, and "acme\n" must not be an account.
ACCOUNT_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_NAME_RE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,100}$")
# ed25519, ecdsa and rsa only: no DSA, no certificates, no security-key (sk-*) types.
_ALLOWED = {
    "ssh-ed25519": "ed25519",
    "ecdsa-sha2-nistp256": "ecdsa",
    "ecdsa-sha2-nistp384": "ecdsa",
    "ecdsa-sha2-nistp521": "ecdsa",
    "ssh-rsa": "rsa",
}
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class PublicKey:
    algorithm: str
    bits: int
    fingerprint: str  # "SHA256:<base64 without padding>", as ssh-keygen -l prints it
    public_key: str  # "<type> <base64>", without the comment
    comment: str


def check_account(account: str) -> str:
    if not ACCOUNT_RE.match(account or ""):
        raise UsageError(
            f"invalid account {account!r}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return account


RFC4716_BEGIN = "---- BEGIN SSH2 PUBLIC KEY ----"
RFC4716_END = "---- END SSH2 PUBLIC KEY ----"


def parse_public_key(text: str, source: str = "key") -> PublicKey:
    """One public key: an OpenSSH line (as in id_ed25519.pub) or an RFC 4716 block (PuTTYgen, ssh-keygen -e).

    UsageError says what is wrong with it.
    """
    if "PRIVATE KEY" in text:
        raise UsageError(f"{source}: this is a private key; give the public key (the .pub file) instead")
    if text.lstrip().startswith("PuTTY-User-Key-File-"):
        raise UsageError(
            f"{source}: this is a PuTTY private key (.ppk); give the public key instead "
            "(PuTTYgen: 'Save public key', or `puttygen KEY.ppk -O public`)"
        )
    if RFC4716_BEGIN in text:
        return _parse_rfc4716(text, source)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not lines:
        raise UsageError(f"{source}: no public key found (expected a line like 'ssh-ed25519 AAAA... comment')")
    if len(lines) > 1:
        raise UsageError(f"{source}: contains {len(lines)} lines; add one key at a time")
    line = lines[0]
    key_type = line.split()[0]
    if key_type not in _ALLOWED:
        _refuse_type(key_type, source)
        raise UsageError(
            f"{source}: not an OpenSSH public key (expected a line like 'ssh-ed25519 AAAA... comment', "
            f"found {line[:40]!r})"
        )
    try:
        key = asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise UsageError(f"{source}: malformed {key_type} public key ({exc})") from None
    if key.get_algorithm() != key_type:
        raise UsageError(f"{source}: malformed public key (the line says {key_type}, the key is {key.get_algorithm()})")
    return _checked(key, source)


def _parse_rfc4716(text: str, source: str) -> PublicKey:
    """An RFC 4716 "SSH2 public key" block: header lines (Comment: "...", continued with a backslash), base64."""
    begins = text.count(RFC4716_BEGIN)
    if begins > 1:
        raise UsageError(f"{source}: contains {begins} keys; add one key at a time")
    before, _, rest = text.partition(RFC4716_BEGIN)
    block, end, after = rest.partition(RFC4716_END)
    if not end:
        raise UsageError(f"{source}: malformed RFC 4716 public key (no '{RFC4716_END}' line)")
    if before.strip() or after.strip():
        raise UsageError(f"{source}: holds more than the RFC 4716 key block; add one key at a time")
    try:
        # asyncssh reads the format, headers included; the Comment header becomes the key's comment.
        key = asyncssh.import_public_key(f"{RFC4716_BEGIN}{block}{RFC4716_END}\n")
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise UsageError(f"{source}: malformed RFC 4716 public key ({exc})") from None
    if key.get_algorithm() not in _ALLOWED:
        _refuse_type(key.get_algorithm(), source)
    return _checked(key, source)


def _refuse_type(key_type: str, source: str) -> None:
    """Raise for a key type we know but do not accept (DSA, certificates, security keys)."""
    if key_type.startswith(("ssh-", "ecdsa-", "sk-")) or "@openssh.com" in key_type:
        raise UsageError(
            f"{source}: key type {key_type!r} is not accepted; use ed25519, ecdsa or rsa (at least {MIN_RSA_BITS} bits)"
        )


def _checked(key: asyncssh.SSHKey, source: str) -> PublicKey:
    """The key as stored, once its strength is checked."""
    key_type = key.get_algorithm()
    if key_type not in _ALLOWED:
        raise UsageError(f"{source}: key type {key_type!r} is not accepted; use ed25519, ecdsa or rsa")
    pyca = key.pyca_key
    bits = int(getattr(pyca, "key_size", 0) or getattr(getattr(pyca, "curve", None), "key_size", 0) or 256)
    if _ALLOWED[key_type] == "rsa" and bits < MIN_RSA_BITS:
        raise UsageError(f"{source}: RSA key of {bits} bits is too weak; use at least {MIN_RSA_BITS} bits, or ed25519")
    blob = key.export_public_key("openssh").decode().split()
    return PublicKey(
        algorithm=key_type,
        bits=bits,
        fingerprint=key.get_fingerprint("sha256"),
        public_key=f"{blob[0]} {blob[1]}",
        comment=(key.get_comment() or "").strip(),
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class KeyStore:
    """Accounts and keys in the state DB. Logins read it each time, so CLI changes apply without restart."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def add(self, account: str, key_text: str, name: str | None = None, source: str = "key") -> dict[str, Any]:
        check_account(account)
        key = parse_public_key(key_text, source)
        if name is None:
            name = key.comment if key.comment and _NAME_RE.match(key.comment) else key.fingerprint
        elif not _NAME_RE.match(name):
            raise UsageError(f"invalid key name {name!r}: use 1 to 100 characters without spaces")
        if name.startswith("SHA256:") and name != key.fingerprint:
            raise UsageError(f"invalid key name {name!r}: names starting with 'SHA256:' are reserved for fingerprints")
        created = _now()
        with self.db.transaction() as conn:
            same_key = conn.execute(
                "SELECT name FROM keys WHERE account = ? AND fingerprint = ?", (account, key.fingerprint)
            ).fetchone()
            if same_key:
                raise UsageError(
                    f"key {key.fingerprint} is already registered for account {account!r} as {same_key['name']!r}"
                )
            if conn.execute("SELECT 1 FROM keys WHERE account = ? AND name = ?", (account, name)).fetchone():
                raise UsageError(f"account {account!r} already has a key named {name!r}; choose another with --name")
            conn.execute(
                "INSERT INTO accounts (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING", (account, created)
            )
            try:
                conn.execute(
                    "INSERT INTO keys (account, name, algorithm, bits, fingerprint, public_key, comment, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (account, name, key.algorithm, key.bits, key.fingerprint, key.public_key, key.comment, created),
                )
            except sqlite3.IntegrityError as exc:  # a concurrent add of the same key or name
                raise UsageError(f"account {account!r}: key already registered ({exc})") from None
        return {"account": account, "name": name, **asdict(key), "created_at": created, "last_used": None}

    def list_keys(self, account: str | None = None) -> list[dict[str, Any]]:
        if account is not None:
            check_account(account)
            if not self.db.query("SELECT 1 FROM accounts WHERE id = ?", (account,)):
                raise NotFoundError(f"no account {account!r}")
            rows = self.db.query("SELECT * FROM keys WHERE account = ? ORDER BY id", (account,))
        else:
            rows = self.db.query("SELECT * FROM keys ORDER BY account, id")
        return [_key_dict(row) for row in rows]

    def revoke(self, account: str, key: str) -> dict[str, Any]:
        """Remove a key by name or SHA256 fingerprint (the 'SHA256:' prefix may be left out)."""
        check_account(account)
        fingerprint = key if key.startswith("SHA256:") else f"SHA256:{key}"
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT * FROM keys WHERE account = ? AND (name = ? OR fingerprint = ?) ORDER BY name = ? DESC",
                (account, key, fingerprint, key),
            ).fetchone()
            if row is None:
                if not conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account,)).fetchone():
                    raise NotFoundError(f"no account {account!r}")
                raise NotFoundError(f"account {account!r} has no key named or with fingerprint {key!r}")
            conn.execute("DELETE FROM keys WHERE id = ?", (row["id"],))
        return _key_dict(row)

    def fingerprints(self, account: str) -> set[str]:
        """The SHA256 fingerprints allowed to log in as `account` right now (empty for unknown accounts)."""
        return set(self.login_keys(account))

    def login_keys(self, account: str) -> dict[str, str]:
        """{SHA256 fingerprint: key name} of the keys allowed to log in as `account` right now."""
        rows = self.db.query("SELECT fingerprint, name FROM keys WHERE account = ?", (account,))
        return {row["fingerprint"]: row["name"] for row in rows}

    def touch(self, account: str, fingerprint: str, when: str | None = None) -> None:
        """Record a successful login with this key: one UPDATE in its own implicit transaction (no BEGIN
        IMMEDIATE round trip), called by the SFTP process off its event loop."""
        self.db.connection().execute(
            "UPDATE keys SET last_used = ? WHERE account = ? AND fingerprint = ?",
            (when or _now(), account, fingerprint),
        )

    def accounts(self) -> list[str]:
        return [row["id"] for row in self.db.query("SELECT id FROM accounts ORDER BY id")]


def _key_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "account": row["account"],
        "name": row["name"],
        "algorithm": row["algorithm"],
        "bits": row["bits"],
        "fingerprint": row["fingerprint"],
        "public_key": row["public_key"],
        "comment": row["comment"],
        "created_at": row["created_at"],
        "last_used": row["last_used"],
    }
