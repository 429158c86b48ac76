"""Shared fixtures; each component's fixtures live in tests/fixtures/ and are registered here."""

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
