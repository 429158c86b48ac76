"""Email transports: SMTP (plain, STARTTLS or implicit TLS, optional login) and .eml files; blocking, run in a thread."""

from __future__ import annotations

import contextlib
import os
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

from daemon.config import SMTPConfig


class DeliveryError(Exception):
    """A delivery attempt failed; `permanent` means retrying the same message cannot help.

    `refused`: when the server refused every recipient, each one's answer (code, text), so that the
    5xx ones are given up and the 4xx ones tried again."""

    def __init__(
        self, message: str, *, permanent: bool = False, refused: dict[str, tuple[int, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.refused = refused or {}


class SMTPMailer:
    """One connection per message: emails are few, and a fresh connection survives server restarts."""

    def __init__(self, config: SMTPConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._live: set[smtplib.SMTP] = set()  # conversations in flight, for abort()

    def abort(self) -> int:
        """Cut the connection of every conversation in flight (from any thread); each send() then fails at once
        with DeliveryError. A connection still being opened is not cut: it ends within `smtp.timeout`."""
        with self._lock:
            clients = list(self._live)
        for client in clients:
            sock = getattr(client, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    # socket.socket's own shutdown, also for a TLS socket: it wakes the thread blocked reading.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
        return len(clients)

    def describe(self) -> str:
        security = "implicit TLS" if self.config.tls else "STARTTLS" if self.config.starttls else "plain"
        login = f", login {self.config.username}" if self.config.username else ""
        return f"smtp://{self.config.host}:{self.config.port} ({security}{login})"

    @contextlib.contextmanager
    def _tracked(self, client: smtplib.SMTP) -> Iterator[None]:
        """`client` is in flight (abort() may cut it) until the block ends."""
        with self._lock:
            self._live.add(client)
        try:
            yield
        finally:
            with self._lock:
                self._live.discard(client)

    def send(self, sender: str, recipients: list[str], data: bytes) -> dict[str, tuple[int, str]]:
        """Deliver `data`; returns the recipients the server refused (code, text) while accepting the others."""
        config = self.config
        try:
            if config.tls:
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    config.host, config.port, timeout=config.timeout, context=ssl.create_default_context()
                )
            else:
                client = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
            with self._tracked(client), client:
                client.ehlo()
                if config.starttls and not config.tls:
                    client.starttls(context=ssl.create_default_context())
                    client.ehlo()
                if config.username:
                    client.login(config.username, config.password)
                utf8 = not all(address.isascii() for address in [sender, *recipients])
                refused = client.sendmail(sender, recipients, data, mail_options=["SMTPUTF8"] if utf8 else [])
                return {rcpt: (code, _text(msg)) for rcpt, (code, msg) in refused.items()}
        except smtplib.SMTPRecipientsRefused as exc:
            answers = {rcpt: (code, _text(msg)) for rcpt, (code, msg) in exc.recipients.items()}
            detail = "; ".join(f"{rcpt}: {code} {msg}" for rcpt, (code, msg) in answers.items())
            permanent = min(code for code, _ in answers.values()) >= 500
            raise DeliveryError(f"every recipient refused: {detail}", permanent=permanent, refused=answers) from None
        except smtplib.SMTPDataError as exc:
            raise DeliveryError(
                f"message refused: {exc.smtp_code} {_text(exc.smtp_error)}", permanent=exc.smtp_code >= 500
            ) from None
        except smtplib.SMTPAuthenticationError as exc:
            # Permanent for this password, but fixing the config must still deliver the queue: retry.
            raise DeliveryError(f"login refused: {exc.smtp_code} {_text(exc.smtp_error)}") from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"server said {exc.smtp_code} {_text(exc.smtp_error)}") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"server does not support it: {exc}") from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS failed: {exc.reason or exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"cannot reach {config.host}:{config.port}: {exc.strerror or exc}") from None


class FileMailer:
    """No SMTP server configured: each email becomes an .eml file a person (or a test) can open."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def describe(self) -> str:
        return f".eml files in {self.folder}"

    def write(self, name: str, data: bytes) -> Path:
        """Atomic (temp file and rename) and idempotent: a retry overwrites the same name."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / name
        temp = self.folder / f".{name}.tmp"
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except OSError as exc:
            raise DeliveryError(f"cannot write {final}: {exc.strerror or exc}") from None
        return final


def _text(message: bytes | str) -> str:
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
