"""Datasets: loading, prompt strategies, chat templates, packing; ``prepare_datasets(cfg, tokenizer)``."""
