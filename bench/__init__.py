"""Benchmarks for intercom-sync: baseline sync, webhook intake and apply, snapshot serving.

`python -m bench` runs everything at full size; `python -m bench --quick` is the CI smoke pass
(small sizes, no timing assertions). See docs/performance.md for the method and the targets.
"""
