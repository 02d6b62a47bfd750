"""Laptop side: CLI, config schema and loading, bundles, run registry, dispatch.

Nothing here imports torch, transformers or a backend SDK at import time, so ``mudpuppy --help`` stays fast.
"""
