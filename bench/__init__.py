"""Benchmarks: scripts that print figures, each run with ``python -m streamrec.bench.<name>``.

``streamrec bench`` runs the suite (:mod:`streamrec.bench.suite`) and writes the report; the
product imports nothing from here until that command runs.
"""
