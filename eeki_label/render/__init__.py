"""Renderers: pure functions from results to text/bytes; no I/O."""
