"""Prometheus metrics, defined once here and updated by each component."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

UPLOADS = Counter("ingestd_uploads", "Files uploaded over SFTP and completed", ["account"], registry=REGISTRY)
UPLOAD_BYTES = Counter("ingestd_upload_bytes", "Bytes of completed SFTP uploads", ["account"], registry=REGISTRY)
UPLOADS_FAILED = Counter(
    "ingestd_uploads_failed", "Uploads discarded (broken, too large)", ["reason"], registry=REGISTRY
)
LOGIN_FAILURES = Counter("ingestd_login_failures", "Refused SFTP logins", registry=REGISTRY)
IMPORTS = Counter("ingestd_imports", "Imports that reached a final status", ["status"], registry=REGISTRY)
ROWS_INGESTED = Counter("ingestd_rows_ingested", "Rows written to the sink", ["type"], registry=REGISTRY)
ROWS_FAILED = Counter("ingestd_rows_failed", "Rows rejected by validation or the sink", ["type"], registry=REGISTRY)
JOB_DURATION = Histogram(
    "ingestd_job_duration_seconds",
    "Time from pickup to a final status",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 7200, 21600),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("ingestd_queue_depth", "Jobs queued or waiting for data", registry=REGISTRY)
OUTBOX_DEPTH = Gauge("ingestd_outbox_depth", "Emails and webhook calls not yet delivered", registry=REGISTRY)
OUTBOX_OLDEST_PENDING = Gauge(
    "ingestd_outbox_oldest_pending_seconds",
    "Age of the oldest email or webhook call not yet delivered (0 when none waits)",
    registry=REGISTRY,
)
SINK_ERRORS = Counter(
    "ingestd_sink_errors", "Sink calls that failed (retried or row errors)", ["kind"], registry=REGISTRY
)
EXPORTS_FINISHED = Counter("ingestd_exports", "Export runs that ended", ["status"], registry=REGISTRY)
EXPORT_ROWS = Counter("ingestd_export_rows", "Rows written to export files", ["type", "format"], registry=REGISTRY)
EXPORT_BYTES = Counter("ingestd_export_bytes", "Bytes of export files published", ["format"], registry=REGISTRY)
