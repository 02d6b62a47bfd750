"""mudpuppy: one Axolotl-style YAML config fine-tunes a language model on any backend.

The package root is the repository root; subpackages keep their jobs apart:
``launcher`` (laptop side), ``backends`` (one module per engine), ``runtime`` (in-container),
``kernels`` (fused ops) and ``templates`` (package data).
"""

__version__ = "0.1.0"
