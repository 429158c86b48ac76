"""The work behind each `ingestd` verb; cli.py only parses and dispatches."""
