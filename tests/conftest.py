"""Shared fixtures; each component's fixtures live in tests/fixtures/ and are registered here."""

import pytest

pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.sshkeys",
    "tests.fixtures.sftp_server",
    "tests.fixtures.daemon",
    "tests.fixtures.noida",
    "tests.fixtures.smtp",
    "tests.fixtures.s3",
    "tests.fixtures.postgres",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On pytest-xdist workers (scripts/test.sh), the tests marked slow are handed out first: the longest run
    while the short ones fill the other workers, instead of one of them starting last and ending the run alone.
    Every worker sorts the same way (a stable sort of the same collection). A plain run keeps the file order."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
