"""`ingestd accounts set|list|show`: contact addresses and allowed domains, validation, JSON and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from daemon.store.db import StateDB
from daemon.store.keys import KeyStore
from tests.fixtures.daemon import run_cli


def ingestd(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m daemon.cli ARGS` on `data_dir`, in a process of its own (tests/fixtures/daemon.run_cli)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("INGESTD_")}
    env["INGESTD_DATA_DIR"] = str(data_dir)
    return run_cli(list(args), env=env, cwd=Path.cwd())


def test_set_creates_the_account_and_normalises_what_it_stores(data_dir: Path) -> None:
    result = ingestd(
        data_dir,
        "accounts", "set", "acme",
        "--email", "Data-Team@Example.COM", "--email", "data-team@example.com", "--email", "ops@acme.example",
        "--allowed-domain", "Example.com", "--allowed-domain", "bücher.example",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    account = json.loads(result.stdout)
    assert account["account"] == "acme"
    assert account["emails"] == ["Data-Team@example.com", "ops@acme.example"]
    assert account["allowed_domains"] == ["example.com", "xn--bcher-kva.example"]
    assert (data_dir / "drop" / "acme").is_dir()
    shown = ingestd(data_dir, "accounts", "show", "acme", "--json")
    assert json.loads(shown.stdout) == account


def test_repeated_options_replace_the_list_and_an_empty_value_clears_it(data_dir: Path) -> None:
    ingestd(data_dir, "accounts", "set", "acme", "--email", "a@example.com", "--allowed-domain", "example.com")
    replaced = json.loads(ingestd(data_dir, "accounts", "set", "acme", "--email", "b@example.com", "--json").stdout)
    assert (replaced["emails"], replaced["allowed_domains"]) == (["b@example.com"], ["example.com"])
    cleared = ingestd(data_dir, "accounts", "set", "acme", "--email", "", "--allowed-domain", "", "--json")
    assert json.loads(cleared.stdout)["emails"] == [] and json.loads(cleared.stdout)["allowed_domains"] == []


def test_bad_input_is_refused_with_exit_2_and_changes_nothing(data_dir: Path) -> None:
    ingestd(data_dir, "accounts", "set", "acme", "--email", "a@example.com")
    for args, words in [
        (("acme", "--email", "not an address"), "invalid address 'not an address'"),
        (("acme", "--email", "a@example.com\nBcc: x@evil.example"), "invalid address"),
        (("acme", "--allowed-domain", "exa mple.com"), "invalid domain 'exa mple.com'"),
        (("acme\n",), "invalid account"),
        (("../etc",), "invalid account"),
    ]:
        result = ingestd(data_dir, "accounts", "set", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr
    assert json.loads(ingestd(data_dir, "accounts", "show", "acme", "--json").stdout)["emails"] == ["a@example.com"]


def test_show_of_an_unknown_account_exits_1(data_dir: Path) -> None:
    result = ingestd(data_dir, "accounts", "show", "nobody")
    assert result.returncode == 1 and "no account 'nobody'" in result.stderr


def test_list_shows_every_account_with_its_keys_and_contacts(data_dir: Path, keypair: tuple[Path, Path]) -> None:
    KeyStore(StateDB(data_dir / "state.sqlite3")).add("globex", keypair[1].read_text())
    ingestd(data_dir, "accounts", "set", "acme", "--email", "a@example.com", "--allowed-domain", "example.com")
    listed = json.loads(ingestd(data_dir, "accounts", "list", "--json").stdout)
    assert [(a["account"], a["keys"], a["emails"], a["allowed_domains"]) for a in listed] == [
        ("acme", 0, ["a@example.com"], ["example.com"]),
        ("globex", 1, [], []),
    ]
    table = ingestd(data_dir, "accounts", "list").stdout.splitlines()
    assert table[0].split() == ["ACCOUNT", "KEYS", "CONTACTS", "ALLOWED", "DOMAINS"]
    assert table[1].split() == ["acme", "0", "a@example.com", "example.com"]
    assert table[2].split() == ["globex", "1", "-", "(any)"]


def test_text_output_escapes_control_characters(data_dir: Path) -> None:
    # Stored by an older version or written straight into the database: printed escaped, never raw.
    ingestd(data_dir, "accounts", "set", "acme")
    db = StateDB(data_dir / "state.sqlite3")
    with db.transaction() as conn:
        conn.execute("""UPDATE accounts SET emails = '["evil\\u001b[2J@example.com"]' WHERE id = 'acme'""")
    db.close()
    shown = ingestd(data_dir, "accounts", "show", "acme")
    assert "\x1b" not in shown.stdout and "evil\\x1b[2J@example.com" in shown.stdout


def test_a_refused_value_is_echoed_escaped(data_dir: Path) -> None:
    result = ingestd(data_dir, "accounts", "set", "acme", "--email", "evil\u202e@exa\x1bmple.com")
    assert result.returncode == 2
    assert "\u202e" not in result.stderr and "\x1b" not in result.stderr
    assert "invalid address 'evil\\u202e@exa\\x1bmple.com'" in result.stderr
