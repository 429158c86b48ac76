"""Job queue, workers and checkpoints."""
