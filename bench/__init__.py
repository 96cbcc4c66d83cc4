"""Benchmarks: scripts run as ``python -m bench.<name>``; each prints what it measured."""
