"""`ingestd nodes [--json]`: the nodes (`ingestd serve` processes) using this state, their heartbeats and imports."""

from __future__ import annotations

import argparse
import json
import sys

from daemon.commands import open_state, print_table
from daemon.config import Config
from daemon.store.nodes import NodeStore
from daemon.text import printable


def list_nodes(args: argparse.Namespace, config: Config) -> int:
    db = open_state(config, create=False)
    nodes = NodeStore(db).list() if db is not None else []
    if args.json:
        print(json.dumps(nodes))
        return 0
    if not nodes:
        print("no node has used this state yet", file=sys.stderr)
        return 0
    header = ("NODE", "STATE", "VERSION", "SFTP", "HEARTBEAT", "AGE", "RUNNING")
    rows = [
        (
            printable(node["id"]),
            node["state"],
            node["version"],
            node["sftp"],
            node["heartbeat_at"],
            f"{node['heartbeat_age_s']:g}s",
            ", ".join(f"{job['id']} ({printable(job['account'])})" for job in node["running"]) or "-",
        )
        for node in nodes
    ]
    print_table(header, rows)
    return 0
