"""Ratio benchmarks: GraphQL through the ASGI app vs. the raw SQL that fetches the same data.

Run ``python -m bench`` (``make bench``); see bench/README.md.
"""
