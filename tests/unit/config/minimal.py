"""The smallest valid config the config tests start from (one alpaca dataset, a local model path)."""

BASE = """\
base_model: examples/tiny-llama
learning_rate: 2e-4
datasets:
  - path: data.jsonl
    type: alpaca
"""
