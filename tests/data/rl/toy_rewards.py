"""Reward functions for the GRPO tests: imported by path (``toy_rewards.short_reward``) from the run folder."""


def _text(completion):
    """Conversational prompts give completions as message lists; plain prompts give strings."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion)
    return completion


def vowel_reward(completions, **kwargs):
    """Share of the reply's characters that are the letter e: learnable by shifting mass to e-rich tokens."""
    return [_text(c).count("e") / max(1, len(_text(c))) for c in completions]


def prompt_transform(cfg, *args, **kwargs):
    """A GRPO dataset transform in Axolotl's shape: factory(cfg) -> (transform, map options)."""

    def transform(example, tokenizer=None):
        return {"prompt": [{"role": "user", "content": example["prompt"]}], "topic": example["topic"]}

    return transform, {"remove_columns": []}
