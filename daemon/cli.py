"""The `ingestd` command line: argument parsing and dispatch; each verb's work lives in daemon/commands."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from daemon import __version__
from daemon.config import load_config
from daemon.errors import IngestdError
from daemon.text import printable


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line instead of the whole usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"ingestd: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ingestd", description="SFTP drop-folder ingestion daemon.")
    parser.add_argument("--version", action="version", version=f"ingestd {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: $INGESTD_CONFIG)")
    # --config is accepted after the verb too: `ingestd keys list --config FILE`.
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML config file")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    verbs.required = True

    serve = verbs.add_parser("serve", help="run SFTP, watcher, workers, notifier and HTTP", parents=[common])
    serve.set_defaults(handler="daemon.service:run_serve")

    keys = verbs.add_parser("keys", help="register, list and revoke partners' SSH public keys")
    key_verbs = keys.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    key_verbs.required = True
    add = key_verbs.add_parser(
        "add", help="register an OpenSSH or RFC 4716 (PuTTYgen) public key for ACCOUNT", parents=[common]
    )
    add.add_argument("account")
    add.add_argument("keyfile", help="public key file, or - for standard input")
    add.add_argument("--name", help="a name for this key (default: the key's comment or its fingerprint)")
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler="daemon.commands.keys:add")
    lst = key_verbs.add_parser("list", help="list registered keys", parents=[common])
    lst.add_argument("account", nargs="?")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler="daemon.commands.keys:list_keys")
    revoke = key_verbs.add_parser("revoke", help="revoke a key by name or SHA256 fingerprint", parents=[common])
    revoke.add_argument("account")
    revoke.add_argument("key", metavar="NAME|FINGERPRINT")
    revoke.add_argument("--json", action="store_true")
    revoke.set_defaults(handler="daemon.commands.keys:revoke")

    accounts = verbs.add_parser("accounts", help="set, list and show accounts' contact addresses and allowed domains")
    account_verbs = accounts.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    account_verbs.required = True
    aset = account_verbs.add_parser(
        "set", help="set an account's contacts and allowed domains (creating the account)", parents=[common]
    )
    aset.add_argument("account")
    aset.add_argument(
        "--email",
        dest="emails",
        action="append",
        metavar="ADDR",
        help="a contact address; repeat for several; replaces the list; --email '' clears it",
    )
    aset.add_argument(
        "--allowed-domain",
        dest="allowed_domains",
        action="append",
        metavar="DOMAIN",
        help="a domain manifests may name in clientEmail; repeat for several; --allowed-domain '' allows any",
    )
    aset.add_argument("--json", action="store_true")
    aset.set_defaults(handler="daemon.commands.accounts:set_account")
    alist = account_verbs.add_parser(
        "list", help="every account with its contacts and allowed domains", parents=[common]
    )
    alist.add_argument("--json", action="store_true")
    alist.set_defaults(handler="daemon.commands.accounts:list_accounts")
    ashow = account_verbs.add_parser("show", help="one account's contacts and allowed domains", parents=[common])
    ashow.add_argument("account")
    ashow.add_argument("--json", action="store_true")
    ashow.set_defaults(handler="daemon.commands.accounts:show")

    bans = verbs.add_parser("bans", help="list and lift bans after failed SFTP logins")
    ban_verbs = bans.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    ban_verbs.required = True
    blist = ban_verbs.add_parser("list", help="active bans: address, account, until when", parents=[common])
    blist.add_argument("--json", action="store_true")
    blist.set_defaults(handler="daemon.commands.bans:list_bans")
    blift = ban_verbs.add_parser("lift", help="lift every ban of ADDRESS (at its next login)", parents=[common])
    blift.add_argument("address", metavar="ADDRESS")
    blift.set_defaults(handler="daemon.commands.bans:lift")

    nodes = verbs.add_parser(
        "nodes", help="the ingestd nodes using this state: heartbeats, what each runs", parents=[common]
    )
    nodes.add_argument("--json", action="store_true")
    nodes.set_defaults(handler="daemon.commands.nodes:list_nodes")

    imports = verbs.add_parser("imports", help="list, show, cancel and retry imports")
    import_verbs = imports.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    import_verbs.required = True
    ilist = import_verbs.add_parser("list", help="imports, newest first", parents=[common])
    ilist.add_argument("--account")
    ilist.add_argument("--status")
    ilist.add_argument("--limit", type=int, default=50)
    ilist.add_argument("--json", action="store_true")
    ilist.set_defaults(handler="daemon.commands.imports:list_imports")
    ishow = import_verbs.add_parser("show", help="one import in detail", parents=[common])
    ishow.add_argument("job_id", metavar="JOB_ID")
    ishow.add_argument("--json", action="store_true")
    ishow.set_defaults(handler="daemon.commands.imports:show")
    icancel = import_verbs.add_parser(
        "cancel", help="cancel an import not yet finished (a processing one stops at its next batch)", parents=[common]
    )
    icancel.add_argument("job_id", metavar="JOB_ID")
    icancel.add_argument("--json", action="store_true")
    icancel.set_defaults(handler="daemon.commands.imports:cancel")
    iretry = import_verbs.add_parser(
        "retry", help="import a finished import's kept files again, as a new import", parents=[common]
    )
    iretry.add_argument("job_id", metavar="JOB_ID")
    iretry.add_argument("--json", action="store_true")
    iretry.set_defaults(handler="daemon.commands.imports:retry")

    profiles = verbs.add_parser("profiles", help="read ingested profiles")
    profile_verbs = profiles.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    profile_verbs.required = True
    pget = profile_verbs.add_parser("get", help="one profile by identity", parents=[common])
    pget.add_argument("account")
    pget.add_argument("identity")
    pget.add_argument("--json", action="store_true")
    pget.set_defaults(handler="daemon.commands.data:get_profile")

    events = verbs.add_parser("events", help="read ingested events")
    event_verbs = events.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    event_verbs.required = True
    elist = event_verbs.add_parser("list", help="one identity's events, oldest first", parents=[common])
    elist.add_argument("account")
    elist.add_argument("identity")
    elist.add_argument(
        "--limit", type=int, default=1000, metavar="N", help="show at most N events, the oldest first (default 1000)"
    )
    elist.add_argument("--json", action="store_true")
    elist.set_defaults(handler="daemon.commands.data:list_events")
    _exports_parser(verbs, common)
    return parser


def _exports_parser(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`ingestd exports ...` (issue #15)."""
    exports = verbs.add_parser("exports", help="export events or profiles to exports/ or an S3 bucket")
    export_verbs = exports.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    export_verbs.required = True
    create = export_verbs.add_parser("create", help="request a one-time or recurring export", parents=[common])
    create.add_argument("account")
    create.add_argument("--type", required=True, metavar="events|profiles")
    create.add_argument("--event", dest="events", action="append", metavar="NAME", help="repeat for several")
    create.add_argument("--format", metavar="jsonl|csv|xml|parquet", help="default jsonl")
    window = create.add_mutually_exclusive_group()
    window.add_argument("--days", metavar="N", help="one-time: events of the last N days (1-45, default 45)")
    window.add_argument("--since", metavar="DATE", help="one-time: events since DATE (at most 45 days back)")
    create.add_argument("--every", metavar="DURATION", help="recurring: every 4h to 24h, what arrived since")
    create.add_argument("--to", metavar="sftp|s3://BUCKET/PREFIX", help="default sftp (the account's exports/)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler="daemon.commands.exports:create")
    xlist = export_verbs.add_parser("list", help="exports, newest first", parents=[common])
    xlist.add_argument("--account")
    xlist.add_argument("--json", action="store_true")
    xlist.set_defaults(handler="daemon.commands.exports:list_exports")
    xshow = export_verbs.add_parser("show", help="one export with its runs and files", parents=[common])
    xshow.add_argument("export_id", metavar="ID")
    xshow.add_argument("--json", action="store_true")
    xshow.set_defaults(handler="daemon.commands.exports:show")
    xcancel = export_verbs.add_parser("cancel", help="cancel a pending or running export", parents=[common])
    xcancel.add_argument("export_id", metavar="ID")
    xcancel.set_defaults(handler="daemon.commands.exports:cancel")
    xrun = export_verbs.add_parser("run", help="make a pending export's next run due now", parents=[common])
    xrun.add_argument("export_id", metavar="ID")
    xrun.set_defaults(handler="daemon.commands.exports:run_now")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Everything ingestd creates (state and sink databases, emails with attachments, partner files, job
    # folders) is for its own user only, whatever the umask it was started with.
    os.umask(0o077)
    module_name, func_name = args.handler.split(":")
    try:
        config = load_config(args.config)
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args, config) or 0)
    except IngestdError as exc:
        print(f"ingestd: error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
