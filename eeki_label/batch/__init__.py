"""Labelling many models at once: ``eeki-label batch`` (a local process pool or a Ray cluster).

Each model is assessed by the ``assess`` command in its own process (same limits, same exit codes, a
byte-identical label); results are collected into ``labels/``, ``results.csv``, ``results.jsonl`` and
a self-contained ``leaderboard.html``. See docs/batch.md.
"""
