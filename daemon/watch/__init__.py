"""The drop-folder watcher: completed manifests become jobs."""
