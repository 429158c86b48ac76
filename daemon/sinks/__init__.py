"""Sinks: where validated rows land (sqlite, elasticsearch), behind one interface."""
