# ingestd: the SFTP drop-folder ingestion daemon. Build: docker build -t ingestd .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the wheel needs, so that editing tests or docs does not invalidate the install layer.
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY manifests ./manifests
COPY notifier ./notifier
RUN pip install . && rm -rf /src

# A fixed non-root user owning the data volume (drop folders, jobs, state DB, outbox, host keys).
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin ingestd \
    && mkdir -p /data && chown ingestd:ingestd /data
USER ingestd
WORKDIR /data

# Listen on every interface inside the container; docker-compose.yml decides what is published.
ENV INGESTD_DATA_DIR=/data \
    INGESTD_SFTP__HOST=0.0.0.0 \
    INGESTD_SFTP__PORT=2222 \
    INGESTD_HTTP__HOST=0.0.0.0 \
    INGESTD_HTTP__PORT=8080
VOLUME ["/data"]
EXPOSE 2222 8080

# /healthz answers 200 only when the SFTP listener, the state store and the sink are all healthy.
HEALTHCHECK --interval=15s --timeout=10s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('INGESTD_HTTP__PORT', '8080') + '/healthz', timeout=9).status == 200 else 1)"]

STOPSIGNAL SIGTERM
CMD ["ingestd", "serve"]
