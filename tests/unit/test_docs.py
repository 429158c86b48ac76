"""The docs agree with the code: config reference, messages partners see, metrics, routes and links."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from daemon import metrics
from daemon.config import Config, config_reference

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "docs").glob("*.md")}


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows of the first Markdown table under `heading` (cells stripped, header and rule dropped)."""
    start = text.index(heading)
    rows: list[list[str]] = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            # A cell may hold "\|" (an escaped pipe): split only on unescaped ones.
            rows.append([cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif rows:
            break
    return rows[2:]


def _unquote(cell: str) -> str:
    assert cell.startswith("`") and cell.endswith("`"), f"expected `code`, found {cell!r}"
    return cell[1:-1]


def _validated(key: str, value: Any) -> Any:
    """`value` as the config model reads it, so "2h" and 7200.0 compare equal."""
    section, _, name = key.rpartition(".")
    if not section:
        return getattr(Config.model_validate({key: value}), key)
    model: type[BaseModel] = type(getattr(Config(), section))
    return getattr(model.model_validate({name: value}), name)


def _reference_rows() -> dict[str, list[str]]:
    rows = _table(README, "### Reference")
    keys = [_unquote(row[0]) for row in rows]
    assert len(keys) == len(set(keys)), f"keys listed twice: {sorted({k for k in keys if keys.count(k) > 1})}"
    return {_unquote(row[0]): row for row in rows}


def test_readme_config_reference_lists_exactly_the_config_keys() -> None:
    documented = set(_reference_rows())
    actual = {name for name, _, _ in config_reference()}
    assert sorted(actual - documented) == [], "config keys missing from README.md's reference table"
    assert sorted(documented - actual) == [], "README.md documents keys the config does not have"


@pytest.mark.parametrize(("key", "default"), [(name, default) for name, default, _ in config_reference()])
def test_readme_config_reference_default_and_variable(key: str, default: Any) -> None:
    row = _reference_rows().get(key)
    if row is None:
        pytest.fail(f"{key} is not in README.md's reference table")
    _, default_cell, variable_cell, meaning = row
    written = tomllib.loads(f"value = {_unquote(default_cell)}")["value"]
    assert _validated(key, written) == default, f"README says {key} defaults to {default_cell}; the config: {default!r}"
    assert _unquote(variable_cell) == "INGESTD_" + key.upper().replace(".", "__")
    assert meaning, f"{key} has no explanation"


def test_quick_start_keeps_the_two_commands() -> None:
    quick = README[README.index("## Quick start") : README.index("## Command line")]
    assert "bash scripts/serve.sh" in quick
    assert "bash scripts/test.sh" in quick


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("name", ["README.md", *sorted(f"docs/{name}" for name in DOCS)])
def test_relative_links_point_at_existing_files_and_headings(name: str) -> None:
    path = ROOT / name
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{name}: link to missing {target}"
        if anchor:
            assert anchor in _anchors(linked.read_text(encoding="utf-8")), f"{name}: no heading for #{anchor}"


def _messages(module_name: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """The upper-case string constants of a module that holds user-facing texts in one place."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        pytest.skip(f"{module_name} is not written yet")
    found = []
    for name, value in vars(module).items():
        if name.isupper() and isinstance(value, str) and name not in exclude:
            found.append(value.split("{", 1)[0].strip())  # templated: the fixed part before the first field
    return [message for message in found if message]


@pytest.mark.parametrize(
    ("module", "exclude"),
    [
        ("daemon.jobs.messages", ()),
        ("daemon.sftp.messages", ()),
    ],
)
def test_partner_guide_explains_every_message_partners_can_see(module: str, exclude: tuple[str, ...]) -> None:
    guide = DOCS["partner-guide.md"]
    troubleshooting = {
        row[0].rstrip(" …") for row in _table(guide, "### In the email") + _table(guide, "### In your SFTP client")
    }
    missing = [
        message for message in _messages(module, exclude) if not any(row.startswith(message) for row in troubleshooting)
    ]
    assert missing == [], f"partner-guide.md's troubleshooting tables do not explain: {missing}"


def test_partner_guide_explains_every_row_and_file_problem() -> None:
    rules = importlib.import_module("manifests.rules")
    base = importlib.import_module("daemon.sinks.base")
    guide = DOCS["partner-guide.md"]
    row_table = {row[0] for row in _table(guide, "### In the error file")}
    row_messages = [
        value
        for name, value in vars(rules).items()
        if name.isupper() and isinstance(value, str) and re.match(r"^[A-Z][a-z]+ [a-z]", value)
    ]
    row_messages = [m for m in row_messages if m != rules.FILE_PREFIX]
    row_messages += [*rules.TYPE_PROBLEMS.values(), base.INCOMPLETE_EVENT, base.INCOMPLETE_PROFILE]
    assert len(row_messages) > 10
    assert [m for m in row_messages if m not in row_table] == [], "row problems missing from the partner guide"
    assert any(row.startswith(rules.ragged_row(3, 4).split(" 3 ")[0]) for row in row_table)

    file_table = {row[0] for row in _table(guide, "#### File problems")}
    details = [
        value
        for name, value in vars(rules).items()
        if name.startswith("FILE_") and isinstance(value, str) and value[0].islower()
    ]
    details += [
        rules.file_duplicate("x", 1, 2).split("'")[0],
        rules.file_too_many_columns(300).split("300")[0],
        rules.file_empty_name(3).split("3")[0],
        rules.file_malformed(7, "x").split("7")[0],
    ]
    assert len(details) >= 6
    missing = [d for d in details if not any(row.startswith(d.rstrip()) for row in file_table)]
    assert missing == [], "file problems missing from the partner guide"
    assert rules.FILE_PREFIX.strip() in guide


def test_partner_guide_lists_every_job_status() -> None:
    from daemon.store.jobs import STATUSES

    documented = [_unquote(row[0]) for row in _table(DOCS["partner-guide.md"], "## 5. Results")]
    assert documented == list(STATUSES)


def test_ops_guide_lists_every_metric() -> None:
    documented = {_unquote(row[0]) for row in _table(DOCS["ops-guide.md"], "### Metrics")}
    exposed = set()
    for collector in metrics.REGISTRY.collect():
        suffix = "_total" if collector.type == "counter" else ""
        exposed.add(collector.name + suffix)
    assert sorted(exposed - documented) == [], "metrics missing from docs/ops-guide.md"
    assert sorted(documented - exposed) == [], "docs/ops-guide.md lists metrics that do not exist"


def test_readme_http_table_matches_the_routes() -> None:
    from daemon.http.app import make_app
    from daemon.store import StateDB

    documented = {_unquote(row[0]) for row in _table(README, "## HTTP")}
    app = make_app(Config(), StateDB.__new__(StateDB))  # routes only: the store is never queried
    routes = set()
    for route in app.router.routes():
        if route.method != "HEAD":
            assert route.resource is not None, route
            routes.add(f"{route.method} {route.resource.canonical}")
    assert documented == routes


def test_ops_guide_log_events_are_ones_the_code_emits() -> None:
    from daemon.store.jobs import FINAL

    source = "\n".join(
        path.read_text(encoding="utf-8")
        for package in ("daemon", "notifier")
        for path in (ROOT / package).rglob("*.py")
    )
    documented = [
        name for row in _table(DOCS["ops-guide.md"], "### Logs") for name in re.findall(r"`([a-z_.]+)`", row[0])
    ]
    assert len(documented) > 10
    # Final statuses are logged as f"job.{status}".
    emitted = [name for name in documented if f'"{name}"' in source or (name.startswith("job.") and name[4:] in FINAL)]
    assert sorted(set(documented) - set(emitted)) == [], "docs/ops-guide.md lists log events nothing emits"


def test_readme_command_table_covers_every_verb_and_option() -> None:
    import argparse

    from daemon.cli import build_parser

    documented = [_unquote(row[0]) for row in _table(README, "## Command line")]

    def leaves(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, argparse.ArgumentParser]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += leaves(sub, f"{prefix} {name}")
        return found or [(prefix, parser)]

    for command, parser in leaves(build_parser(), "ingestd"):
        line = next((doc for doc in documented if doc == command or doc.startswith(command + " ")), None)
        assert line is not None, f"README.md's command table lacks `{command}`"
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help", "--config", "--version"):
                    assert option in line, f"`{command}`: option {option} is not in README.md's command table"
