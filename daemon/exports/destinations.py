"""Where finished chunks go: the account's `exports/` folder in its SFTP root, or an S3-compatible bucket.

A chunk is written under a hidden temp name and only published (renamed, or uploaded) when complete, so a reader
never sees half a file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.exports import texts
from daemon.exports.model import s3_target

EXPORTS_FOLDER = "exports"
TEMP_PREFIX = ".export-"


class DestinationError(Exception):
    """The destination refused or could not be reached; the message is the run's failure reason."""


def exports_folder(config: Config, account: str) -> Path:
    return config.drop_root / account / EXPORTS_FOLDER


class Destination:
    """`temp(name)` is where the chunk is written; `publish` makes it visible under `name`, returns its location."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging

    def check(self) -> None:
        """Raise DestinationError when the destination cannot take files now."""

    def temp(self, name: str) -> Path:
        raise NotImplementedError

    def publish(self, temp: Path, name: str) -> str:
        raise NotImplementedError

    def remove(self, location: str) -> None:
        raise NotImplementedError

    def clear_temps(self, export_id: int) -> None:
        """Remove what an interrupted run left half-written (temp chunks, spools)."""
        shutil.rmtree(self.staging, ignore_errors=True)


class SFTPFolder(Destination):
    """drop/<account>/exports/: the temp name starts with '.', which the SFTP server neither lists nor serves."""

    def __init__(self, config: Config, account: str, staging: Path) -> None:
        super().__init__(staging)
        self.folder = exports_folder(config, account)

    def check(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationError(f"{self.folder}: {exc.strerror or exc}") from None

    def temp(self, name: str) -> Path:
        return self.folder / f"{TEMP_PREFIX}{name}.part"

    def publish(self, temp: Path, name: str) -> str:
        os.replace(temp, self.folder / name)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a power cut before the run is recorded done
        finally:
            os.close(fd)
        return f"{EXPORTS_FOLDER}/{name}"

    def remove(self, location: str) -> None:
        name = location.removeprefix(f"{EXPORTS_FOLDER}/")
        (self.folder / name).unlink(missing_ok=True)

    def clear_temps(self, export_id: int) -> None:
        super().clear_temps(export_id)
        if self.folder.is_dir():
            for entry in self.folder.iterdir():
                if entry.name.startswith(f"{TEMP_PREFIX}{export_id}-"):
                    entry.unlink(missing_ok=True)


class S3Bucket(Destination):
    """An S3-compatible bucket through boto3: chunks are staged under data_dir and uploaded (in parts when over
    `exports.multipart_threshold`), each request retried `exports.max_attempts` times."""

    def __init__(self, config: Config, destination: str, staging: Path) -> None:
        super().__init__(staging)
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config as BotoConfig

        settings = config.exports
        self.bucket, self.prefix = s3_target(destination)
        options: dict[str, Any] = {
            "region_name": settings.region or None,
            "config": BotoConfig(
                retries={"max_attempts": settings.max_attempts, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                s3={"addressing_style": "path"} if settings.endpoint_url else None,
            ),
        }
        if settings.endpoint_url:
            options["endpoint_url"] = settings.endpoint_url
        if settings.access_key:
            options["aws_access_key_id"] = settings.access_key
            options["aws_secret_access_key"] = settings.secret_key
        self.client = boto3.session.Session().client("s3", **options)
        self.transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold,
            multipart_chunksize=max(settings.multipart_threshold, 5 * 1024 * 1024),
            max_concurrency=4,
        )

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _failed(self, exc: Exception) -> DestinationError:
        reason = getattr(exc, "response", {}).get("Error", {}).get("Message") if hasattr(exc, "response") else None
        return DestinationError(
            texts.S3_FAILED.format(bucket=self.bucket, reason=reason or str(exc) or type(exc).__name__)
        )

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                raise DestinationError(texts.S3_FAILED.format(bucket=self.bucket, reason="no such bucket")) from None
            raise self._failed(exc) from None

    def temp(self, name: str) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True)
        return self.staging / f"{TEMP_PREFIX}{name}.part"

    def publish(self, temp: Path, name: str) -> str:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.upload_file(str(temp), self.bucket, self._key(name), Config=self.transfer)
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise self._failed(exc) from None
        temp.unlink(missing_ok=True)
        return f"s3://{self.bucket}/{self._key(name)}"

    def remove(self, location: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = location.removeprefix(f"s3://{self.bucket}/")
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise self._failed(exc) from None


def open_destination(config: Config, account: str, destination: str, staging: Path) -> Destination:
    if destination == "sftp":
        return SFTPFolder(config, account, staging)
    return S3Bucket(config, destination, staging)
