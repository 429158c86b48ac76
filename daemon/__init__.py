"""ingestd: an SFTP drop-folder ingestion daemon."""

__version__ = "0.1.0"
