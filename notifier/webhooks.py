"""Webhooks: the same events as emails, as signed JSON POSTs (X-Ingestd-Signature: sha256=<HMAC of the body>)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp

from daemon import __version__
from notifier.mailer import DeliveryError
from notifier.render import failure_kind, partner_error_path

SIGNATURE_HEADER = "X-Ingestd-Signature"

_JOB_FIELDS = (
    "id",
    "account",
    "file_name",
    "manifest_name",
    "type",
    "status",
    "rows_total",
    "rows_ingested",
    "rows_failed",
    "created_at",
    "started_at",
    "finished_at",
    "error",
)


def build_body(kind: str, job: dict[str, Any], now: datetime | None = None) -> bytes:
    """The JSON body for one event: the job's public fields plus what the email says about it."""
    body_job: dict[str, Any] = {field: job.get(field) for field in _JOB_FIELDS}
    body_job["failure"] = failure_kind(job) if kind == "failed" else None
    body_job["problems"] = [str(problem) for problem in job.get("problems") or []]
    body_job["reasons"] = [
        {"message": str(message), "count": int(count)} for message, count in job.get("reasons") or []
    ]
    body_job["progress"] = job.get("progress") if kind == "progress" else None
    body_job["error_file"] = partner_error_path(job) if job.get("error_csv") else None
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"event": kind, "occurred_at": stamp, "job": body_job}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def sign(secret: str, body: bytes) -> str:
    """The signature header's value; receivers recompute it over the raw body and compare in constant time."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(sign(secret, body), header)


class WebhookClient:
    """POSTs with one shared aiohttp session; any answer but 2xx is a failed attempt, retried by the sender."""

    def __init__(self, secret: str, timeout: float) -> None:
        self.secret = secret
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, event: str, delivery: int) -> int:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"ingestd/{__version__}",
            "X-Ingestd-Event": event,
            "X-Ingestd-Delivery": str(delivery),
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                if 200 <= response.status < 300:
                    return response.status
                text = (await response.text(errors="replace"))[:200].strip()
                raise DeliveryError(f"{url} answered {response.status} {response.reason or ''} {text}".strip())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"{url}: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
