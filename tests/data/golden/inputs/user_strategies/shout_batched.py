"""The batched variant (``supports_batched``): Axolotl maps it over column batches."""

from user_strategies.shout import ShoutBatched


def load(tokenizer, cfg):
    return ShoutBatched(tokenizer, cfg.sequence_len, "q")
