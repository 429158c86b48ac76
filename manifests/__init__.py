"""The manifest model and the columnar row-validation engine (pure: no servers)."""
