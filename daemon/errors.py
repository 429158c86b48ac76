"""Exceptions that carry intent: what the caller should do about them."""

from __future__ import annotations


class IngestdError(Exception):
    """Base of every error ingestd raises on purpose; `exit_code` is the CLI's."""

    exit_code = 2


class UsageError(IngestdError):
    """Bad input from a person: a CLI argument, a key file, a config value (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration is invalid; the message names the key: "smtp.port: ..."."""


class NotFoundError(IngestdError):
    """The thing asked for does not exist (exit 1)."""

    exit_code = 1


class RetryableError(IngestdError):
    """A dependency is down for now (sink, SMTP): pause and try again, lose nothing."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class JobFailed(IngestdError):
    """The job cannot go on; `reason` is the partner-facing reason shown in emails."""

    def __init__(self, reason: str, details: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or []
