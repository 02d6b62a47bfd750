"""A user prompt strategy in Axolotl's plugin shape (``type: user_strategies.shout``), plain Python only."""


class Shout:
    supports_batched = False

    def __init__(self, tokenizer, sequence_len, field_q):
        self.tokenizer = tokenizer
        self.sequence_len = sequence_len
        self.field_q = field_q

    def filter_rows(self, row):
        return bool(row["a"])

    def tokenize_prompt(self, row):
        prompt = self.tokenizer(row[self.field_q].upper() + "\n")["input_ids"]
        reply = self.tokenizer(row["a"], add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        ids = (prompt + reply)[: self.sequence_len]
        return {"input_ids": ids, "attention_mask": [1] * len(ids),
                "labels": ([-100] * len(prompt) + reply)[: self.sequence_len]}


class ShoutBatched(Shout):
    supports_batched = True

    def tokenize_prompt(self, batch):
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        out = [Shout.tokenize_prompt(self, r) for r in rows]
        return {k: [o[k] for o in out] for k in ("input_ids", "attention_mask", "labels")}


def load(tokenizer, cfg, ds_cfg=None):
    return Shout(tokenizer, cfg.sequence_len, (ds_cfg or {}).get("field") or "q")
