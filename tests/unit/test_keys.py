"""`ingestd keys add|list|revoke`: accepted key types, clear refusals with exit 2, not-found with exit 1."""

from __future__ import annotations

import io
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.store import StateDB
from daemon.store.keys import KeyStore
from tests.fixtures.sshkeys import make_keypair

Cli = Callable[..., tuple[int, str, str]]  # cli(*args, stdin=None) -> (exit code, stdout, stderr)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run the real CLI in-process against a data dir under tmp_path: returns (exit code, stdout, stderr)."""
    for name in [name for name in __import__("os").environ if name.upper().startswith("INGESTD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("INGESTD_DATA_DIR", str(tmp_path / "data"))

    def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def ssh_keygen_fingerprint(public: Path) -> str:
    output = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public)], capture_output=True, text=True)
    return output.stdout.split()[1]


@pytest.mark.parametrize(
    ("key_type", "bits", "algorithm"),
    [
        ("ed25519", None, "ssh-ed25519"),
        ("ecdsa", 256, "ecdsa-sha2-nistp256"),
        ("ecdsa", 521, "ecdsa-sha2-nistp521"),
        ("rsa", 2048, "ssh-rsa"),
    ],
)
def test_accepted_key_types_print_the_ssh_keygen_fingerprint(
    cli: Cli, keys_dir: Path, key_type: str, bits: int | None, algorithm: str
) -> None:
    _, public = make_keypair(keys_dir, name=f"id_{key_type}_{bits}", key_type=key_type, bits=bits)
    code, out, err = cli("keys", "add", "acme", str(public))
    assert (code, err) == (0, "")
    fingerprint = ssh_keygen_fingerprint(public)
    assert fingerprint.startswith("SHA256:") and fingerprint in out
    code, out, _ = cli("keys", "list", "acme", "--json")
    [key] = json.loads(out)
    assert key["algorithm"] == algorithm and key["fingerprint"] == fingerprint
    assert key["bits"] == (bits or 256)
    assert key["name"] == f"id_{key_type}_{bits}"  # the key's comment


def test_weak_rsa_key_is_refused(cli: Cli, keys_dir: Path) -> None:
    _, public = make_keypair(keys_dir, name="weak", key_type="rsa", bits=1024)
    code, out, err = cli("keys", "add", "acme", str(public))
    assert code == 2 and out == ""
    assert (
        err
        == f"ingestd: error: key file {public}: RSA key of 1024 bits is too weak; use at least 2048 bits, or ed25519\n"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no public key found"),
        ("hello world\n", "not an OpenSSH public key"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== x\n", "malformed ssh-ed25519 public key"),
        ("ssh-ed25519 !!!notbase64 x\n", "malformed ssh-ed25519 public key"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP8= old\n", "key type 'ssh-dss' is not accepted"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n", "this is a private key"),
    ],
)
def test_malformed_key_files_are_refused_with_a_reason(cli: Cli, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "key.pub"
    path.write_text(content)
    code, out, err = cli("keys", "add", "acme", str(path))
    assert code == 2 and out == ""
    assert err.startswith(f"ingestd: error: key file {path}: ") and message in err
    assert "Traceback" not in err


def test_a_file_with_two_keys_is_refused(cli: Cli, keys_dir: Path) -> None:
    _, first = make_keypair(keys_dir, name="one")
    _, second = make_keypair(keys_dir, name="two")
    both = keys_dir / "both.pub"
    both.write_text(first.read_text() + second.read_text())
    code, _, err = cli("keys", "add", "acme", str(both))
    assert code == 2 and "contains 2 lines; add one key at a time" in err


def test_missing_key_file_and_bad_account_are_usage_errors(cli: Cli, keys_dir: Path) -> None:
    _, public = make_keypair(keys_dir)
    assert cli("keys", "add", "acme", str(keys_dir / "nope.pub"))[2] == (
        f"ingestd: error: key file {keys_dir / 'nope.pub'}: not found\n"
    )
    for account in (".acme", "ac me", "a" * 65, "acme/../x"):
        code, _, err = cli("keys", "add", account, str(public))
        assert code == 2 and f"invalid account {account!r}" in err


def test_duplicate_key_or_name_is_refused_but_another_account_may_share_a_key(cli: Cli, keys_dir: Path) -> None:
    _, public = make_keypair(keys_dir, name="laptop")
    _, other = make_keypair(keys_dir, name="other")
    assert cli("keys", "add", "acme", str(public))[0] == 0
    code, _, err = cli("keys", "add", "acme", str(public), "--name", "again")
    assert code == 2 and "is already registered for account 'acme' as 'laptop'" in err
    code, _, err = cli("keys", "add", "acme", str(other), "--name", "laptop")
    assert code == 2 and "already has a key named 'laptop'" in err
    assert cli("keys", "add", "globex", str(public))[0] == 0
    code, out, _ = cli("keys", "list", "--json")
    assert [(key["account"], key["name"]) for key in json.loads(out)] == [("acme", "laptop"), ("globex", "laptop")]


def test_add_from_stdin_with_a_name_creates_the_drop_folder(cli: Cli, keys_dir: Path, tmp_path: Path) -> None:
    _, public = make_keypair(keys_dir)
    code, out, _ = cli("keys", "add", "acme", "-", "--name", "ci-runner", "--json", stdin=public.read_text())
    assert code == 0
    added = json.loads(out)
    assert added["name"] == "ci-runner" and added["account"] == "acme" and added["fingerprint"].startswith("SHA256:")
    assert (tmp_path / "data" / "drop" / "acme").is_dir()


def test_list_shows_a_table_and_unknown_accounts_exit_1(cli: Cli, keys_dir: Path) -> None:
    _, public = make_keypair(keys_dir, name="laptop")
    cli("keys", "add", "acme", str(public))
    code, out, _ = cli("keys", "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["ACCOUNT", "NAME", "TYPE", "BITS", "FINGERPRINT", "ADDED", "LAST", "USED"]
    assert row.split()[:4] == ["acme", "laptop", "ssh-ed25519", "256"]
    assert row.split()[-1] == "never"
    code, out, err = cli("keys", "list", "nobody")
    assert (code, out, err) == (1, "", "ingestd: error: no account 'nobody'\n")


def test_revoke_by_name_or_fingerprint(cli: Cli, keys_dir: Path) -> None:
    _, first = make_keypair(keys_dir, name="first")
    _, second = make_keypair(keys_dir, name="second")
    cli("keys", "add", "acme", str(first))
    cli("keys", "add", "acme", str(second))
    code, out, _ = cli("keys", "revoke", "acme", "first")
    assert code == 0 and out.startswith("revoked key 'first' (SHA256:")
    fingerprint = ssh_keygen_fingerprint(second)
    code, out, _ = cli("keys", "revoke", "acme", fingerprint.removeprefix("SHA256:"), "--json")
    assert code == 0 and json.loads(out)["name"] == "second"
    assert json.loads(cli("keys", "list", "acme", "--json")[1]) == []
    code, _, err = cli("keys", "revoke", "acme", "first")
    assert code == 1 and "has no key named or with fingerprint 'first'" in err
    code, _, err = cli("keys", "revoke", "nobody", "first")
    assert code == 1 and "no account 'nobody'" in err


def test_keystore_fingerprints_follow_adds_and_revokes(state_engine: Callable[[], StateDB], keys_dir: Path) -> None:
    # What a login reads: two stores on the same state (file or PostgreSQL) see each other's changes at once.
    writer = KeyStore(state_engine())
    reader = KeyStore(state_engine())
    _, public = make_keypair(keys_dir)
    assert reader.fingerprints("acme") == set()
    added = writer.add("acme", public.read_text())
    assert reader.fingerprints("acme") == {added["fingerprint"]}
    writer.revoke("acme", added["name"])
    assert reader.fingerprints("acme") == set()


def test_an_account_id_with_a_trailing_newline_is_refused(cli: Cli, keys_dir: Path) -> None:
    _, public = make_keypair(keys_dir)
    code, out, err = cli("keys", "add", "acme\n", str(public))
    assert (code, out) == (2, "")
    assert err.startswith("ingestd: error: invalid account 'acme\\n'")


def rfc4716(public: Path, comment: str | None = None) -> Path:
    """`ssh-keygen -e` of `public` (an RFC 4716 "SSH2 PUBLIC KEY" block, as PuTTYgen saves them), optionally with
    the Comment header PuTTYgen writes instead of ssh-keygen's."""
    exported = subprocess.run(["ssh-keygen", "-e", "-f", str(public)], capture_output=True, text=True, check=True)
    text = exported.stdout
    if comment is not None:
        text = re.sub(r'^Comment: ".*"$', f'Comment: "{comment}"', text, flags=re.MULTILINE)
    path = public.with_suffix(".rfc4716")
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("key_type", "bits", "algorithm"),
    [("ed25519", None, "ssh-ed25519"), ("ecdsa", 384, "ecdsa-sha2-nistp384"), ("rsa", 3072, "ssh-rsa")],
)
def test_rfc4716_keys_are_accepted_with_the_same_fingerprint(
    cli: Cli, keys_dir: Path, key_type: str, bits: int | None, algorithm: str
) -> None:
    _, public = make_keypair(keys_dir, name=f"id_{key_type}", key_type=key_type, bits=bits)
    exported = rfc4716(public)
    assert exported.read_text().startswith("---- BEGIN SSH2 PUBLIC KEY ----\nComment: ")
    code, out, err = cli("keys", "add", "acme", str(exported), "--json")
    assert (code, err) == (0, "")
    added = json.loads(out)
    assert added["algorithm"] == algorithm and added["fingerprint"] == ssh_keygen_fingerprint(public)
    # ssh-keygen's comment ("256-bit ED25519, converted by ...") has spaces: the fingerprint names the key.
    assert added["name"] == added["fingerprint"]
    # The same key as an OpenSSH line is the same key.
    code, _, err = cli("keys", "add", "acme", str(public))
    assert code == 2 and "is already registered for account 'acme'" in err


def test_rfc4716_comment_names_the_key_and_continued_headers_are_read(cli: Cli, keys_dir: Path) -> None:
    _, public = make_keypair(keys_dir, name="laptop")
    exported = rfc4716(public, comment="ed25519-key-20240501")
    code, out, err = cli("keys", "add", "acme", "-", "--json", stdin=exported.read_text())
    assert (code, err) == (0, "") and json.loads(out)["name"] == "ed25519-key-20240501"
    _, other = make_keypair(keys_dir, name="other")
    continued = rfc4716(other, comment="rsa-key-\\\n20240502")  # a header continued on the next line
    code, out, err = cli("keys", "add", "acme", str(continued), "--json")
    assert (code, err) == (0, "") and json.loads(out)["name"] == "rsa-key-20240502"


def test_rfc4716_refusals_keep_their_reasons(cli: Cli, keys_dir: Path) -> None:
    _, weak = make_keypair(keys_dir, name="weak", key_type="rsa", bits=1024)
    code, _, err = cli("keys", "add", "acme", str(rfc4716(weak)))
    assert code == 2 and "RSA key of 1024 bits is too weak" in err
    _, one = make_keypair(keys_dir, name="one")
    _, two = make_keypair(keys_dir, name="two")
    both = keys_dir / "both.rfc4716"
    both.write_text(rfc4716(one).read_text() + rfc4716(two).read_text())
    code, _, err = cli("keys", "add", "acme", str(both))
    assert code == 2 and "contains 2 keys; add one key at a time" in err
    mixed = keys_dir / "mixed.pub"
    mixed.write_text(one.read_text() + rfc4716(two).read_text())
    code, _, err = cli("keys", "add", "acme", str(mixed))
    assert code == 2 and "add one key at a time" in err
    cut = keys_dir / "cut.rfc4716"
    cut.write_text(rfc4716(one).read_text().replace("---- END SSH2 PUBLIC KEY ----\n", ""))
    code, _, err = cli("keys", "add", "acme", str(cut))
    assert code == 2 and "malformed RFC 4716 public key (no '---- END SSH2 PUBLIC KEY ----' line)" in err
    broken = keys_dir / "broken.rfc4716"
    text = rfc4716(one).read_text().splitlines()
    broken.write_text("\n".join([*text[:2], "!!!!notbase64", text[-1]]) + "\n")
    code, _, err = cli("keys", "add", "acme", str(broken))
    assert code == 2 and "malformed RFC 4716 public key" in err and "Traceback" not in err
    assert json.loads(cli("keys", "list", "--json")[1]) == []


def test_a_putty_private_key_is_refused_with_a_hint(cli: Cli, tmp_path: Path) -> None:
    ppk = tmp_path / "key.ppk"
    ppk.write_text("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: laptop\nPublic-Lines: 2\n")
    code, _, err = cli("keys", "add", "acme", str(ppk))
    assert code == 2 and "this is a PuTTY private key (.ppk)" in err and "puttygen KEY.ppk -O public" in err
