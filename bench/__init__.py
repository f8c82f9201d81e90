"""Benchmarks: Wharf against pypiserver and against the nginx ceiling and bottle floor.

``python -m bench.run`` is the one command; ``bench/README.md`` says what it measures.
"""
