"""Shared fixtures; each component's fixtures live in tests/fixtures/ and are registered here."""

pytest_plugins = [
    "tests.fixtures.common",
]
