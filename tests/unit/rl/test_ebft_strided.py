"""EBFT strided mode: the block layout and advantages against hand-computed values, and the block-parallel
sequence against ordinary forwards of each block on its own (generation, features, and the loss gradient: the
reference is plain torch on separate ``prefix + block`` sequences with the model's default causal attention)."""

from __future__ import annotations

import math
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)


def test_layout_by_hand() -> None:
    import torch

    from mudpuppy.runtime.rl.ebft_strided import Layout

    lay = Layout(seq_len=12, anchor=3, stride=2, gen_len=2)
    assert (lay.num_blocks, lay.total) == (4, 20)  # (12 - 2 - 3) // 2 + 1 blocks at 3, 5, 7, 9
    assert lay.positions(2).tolist() == list(range(12)) + [3, 5, 7, 9, 4, 6, 8, 10]
    assert lay.sources().tolist() == [2, 4, 6, 8, 12, 13, 14, 15]  # step 0 from the prefix, then from step 0
    assert lay.truth().tolist() == [[3, 4], [5, 6], [7, 8], [9, 10]]
    assert lay.generated().tolist() == [[12, 16], [13, 17], [14, 18], [15, 19]]
    allowed = lay.allowed(2)
    assert allowed.shape == (20, 20)
    assert allowed[:12, :12].equal(torch.ones(12, 12).tril().bool()) and not allowed[:12, 12:].any()
    row = {k for k in range(20) if allowed[17, k]}  # block 1, step 1: prefix 0..4, its step 0, itself
    assert row == {0, 1, 2, 3, 4, 13, 17}
    assert {k for k in range(20) if allowed[12, k]} == {0, 1, 2, 12}  # block 0, step 0
    assert Layout(seq_len=10, anchor=8, stride=4, gen_len=4).num_blocks <= 0  # too short: no block


def test_advantages_by_hand() -> None:
    import torch

    from mudpuppy.runtime.rl.ebft_strided import advantages

    rewards = torch.tensor([1.0, 2.0, 6.0]).view(1, 3, 1)  # one document, three rollouts, one block
    assert advantages(rewards, "rloo").flatten().tolist() == pytest.approx([1 - 4, 2 - 3.5, 6 - 1.5])
    s7 = math.sqrt(7.0)  # unbiased std of 1, 2, 6
    assert advantages(rewards, "group_norm").flatten().tolist() == pytest.approx([-2 / s7, -1 / s7, 3 / s7])
    assert advantages(rewards, "reinforce").flatten().tolist() == [1.0, 2.0, 6.0]


def test_rewards_per_block_by_hand() -> None:
    import torch

    from mudpuppy.runtime.rl.ebft_strided import Settings, block_rewards

    gen = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).view(1, 2, 1, 2)  # one document, 2 rollouts, 1 block
    gt = torch.tensor([[1.0, 1.0], [1.0, 1.0]]).view(1, 2, 1, 2)
    out = block_rewards(gen, gt, Settings(alignment_coef=1.0, diversity_coef=0.5))
    c = 1 / math.sqrt(2)  # cos to the truth; the two rollouts are orthogonal: no diversity penalty
    assert out["reward"].flatten().tolist() == pytest.approx([2 * c, 2 * c])
    assert out["cfm"].item() == pytest.approx((0.5 - 1) ** 2 + (1 - 1) ** 2)


def test_anchor_and_settings_rules() -> None:
    import torch
    import yaml

    from mudpuppy.launcher.config import load_config_text
    from mudpuppy.runtime.rl.ebft_strided import Settings, anchor_of

    st = Settings(context_length=3, min_completion_prefix=2)
    assert anchor_of({"prompt_length": torch.tensor(7)}, st) == (9, True)
    assert anchor_of({"labels": torch.tensor([-100, -100, -100, -100, 5, 6])}, st) == (6, True)
    assert anchor_of({"labels": torch.tensor([-100, 4, 5, 6])}, st) == (3, True)  # context_length is the floor
    assert anchor_of({"labels": torch.tensor([1, 2, 3])}, st) == (3, False)  # raw text: labels = ids
    cfg = load_config_text(yaml.safe_dump({
        "base_model": "m", "learning_rate": 1e-4, "rl": "ebft", "datasets": [{"path": "d.jsonl",
                                                                              "type": "ebft_pretrain.transform"}],
        "ebft": {"mode": "strided", "n_samples_per_prompt": 1, "stride": 4, "ce_coef": 0.1}})).config
    one = Settings.from_config(cfg)
    assert (one.n_samples, one.diversity_coef, one.advantage_estimator, one.stride, one.ce_coef) == \
        (1, 0.0, "reinforce", 4, 0.1)
    # every key of Axolotl's llama-1b-ebft-strided-structured.yaml ebft: block is read (values changed to tell)
    block = {"mode": "strided", "stride": 5, "context_length": 7, "generate_max_len": 6, "n_samples_per_prompt": 3,
             "temperature": 0.5, "top_p": 0.9, "feature_layers": [0.5, 1.0], "embed_method": "mean_pooling",
             "use_whitening": True, "alignment_coef": 1.5, "diversity_coef": 0.25, "rl_coef": 2.0,
             "ce_coef": 0.03, "advantage_estimator": "group_norm", "min_completion_prefix": 8}
    cfg = load_config_text(yaml.safe_dump({
        "base_model": "m", "learning_rate": 1e-4, "rl": "ebft", "ebft": block,
        "datasets": [{"path": "d.jsonl", "type": "ebft_strided_structured.transform"}]})).config
    assert Settings.from_config(cfg) == Settings(
        stride=5, context_length=7, generate_max_len=6, n_samples=3, temperature=0.5, top_p=0.9,
        feature_layers=(0.5, 1.0), embed_method="mean_pooling", use_whitening=True, alignment_coef=1.5,
        diversity_coef=0.25, rl_coef=2.0, ce_coef=0.03, advantage_estimator="group_norm", min_completion_prefix=8)


def test_top_p_keeps_the_smallest_head() -> None:
    import torch

    from mudpuppy.runtime.rl.ebft_strided import sample

    logits = torch.tensor([0.5, 0.3, 0.2]).log().expand(4000, 3)
    torch.manual_seed(0)
    drawn = sample(logits, temperature=1.0, top_p=0.6)  # 0.5 < 0.6 so the second stays; 0.8 > 0.6 drops the third
    assert set(drawn.tolist()) == {0, 1}
    assert sample(logits, temperature=0.0, top_p=1.0).unique().tolist() == [0]


# ---------------------------------------------------------------------------------------------- vs separate blocks
def _model(attn: str) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    config._attn_implementation = attn
    return LlamaForCausalLM(config).eval()


def _setup() -> tuple[Any, Any]:
    import torch

    from mudpuppy.runtime.rl.ebft_strided import Layout

    torch.manual_seed(1)
    docs = torch.randint(0, 61, (2, 13))
    return docs, Layout(seq_len=13, anchor=3, stride=3, gen_len=3)  # blocks at 3, 6, 9 (9 + 3 <= 13)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_greedy_blocks_equal_separate_greedy_decoding(attn: str) -> None:
    import torch

    from mudpuppy.runtime.rl.ebft_strided import generate

    model = _model(attn)
    docs, lay = _setup()
    full = generate(model, docs, lay, temperature=0.0, top_p=1.0)
    assert full.shape == (2, lay.total)
    for r in range(2):
        for b in range(lay.num_blocks):
            seq = docs[r, : lay.anchor + b * lay.stride]
            for _ in range(lay.gen_len):  # ordinary causal decoding of this block alone
                nxt = model(input_ids=seq[None]).logits[0, -1].argmax()
                seq = torch.cat([seq, nxt[None]])
            assert full[r, lay.generated()[b]].tolist() == seq[-lay.gen_len:].tolist(), (r, b)


def test_block_features_equal_separate_forwards() -> None:
    import torch
    import torch.nn.functional as F

    from mudpuppy.runtime.rl.ebft_strided import block_features, generate

    model = _model("sdpa")
    docs, lay = _setup()
    torch.manual_seed(2)
    full = generate(model, docs, lay, temperature=1.0, top_p=1.0)
    with torch.no_grad():
        gen, gt = block_features(model, full, lay, [0.5, 1.0], "mean_pooling")
        for r in range(2):
            doc_states = model(input_ids=docs[r][None], output_hidden_states=True).hidden_states
            for b in range(lay.num_blocks):
                start = lay.anchor + b * lay.stride
                seq = torch.cat([docs[r, :start], full[r, lay.generated()[b]]])
                states = model(input_ids=seq[None], output_hidden_states=True).hidden_states

                def feat(hs: Any, lo: int, hi: int) -> Any:
                    return torch.cat([F.normalize(hs[i][0, lo:hi], dim=-1) for i in (1, 2)], dim=-1).mean(0)

                assert torch.allclose(gen[r, b], feat(states, start, start + lay.gen_len), atol=1e-5)
                assert torch.allclose(gt[r, b], feat(doc_states, start, start + lay.gen_len), atol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_loss_gradient_equals_separate_sequences(attn: str) -> None:
    import torch

    from mudpuppy.runtime.rl.ebft_strided import Layout, Rollouts, combine, generate, policy_terms

    model = _model(attn)
    docs, lay = _setup()
    torch.manual_seed(3)
    full = generate(model, docs, lay, temperature=1.0, top_p=1.0)
    adv = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
    valid = torch.tensor([[True, True, True], [True, True, False]])  # the second row's last block is padding
    ce_mask = torch.rand(2, lay.seq_len - 1) > 0.3
    rl_coef, ce_coef = 0.7, 0.3
    model.zero_grad()
    # three documents in one forward: the two above, and the second one's first 9 tokens with its own layout
    short = Layout(seq_len=9, anchor=2, stride=2, gen_len=3)  # blocks at 2, 4, 6 (6 + 3 <= 9), 2 rollouts
    torch.manual_seed(4)
    full_short = generate(model, docs[1:2, :9].expand(2, -1), short, temperature=1.0, top_p=1.0)
    adv_short = torch.tensor([[1.0, -2.0, 0.25], [0.5, 0.5, -1.0]])
    ce_short = torch.tensor([[True] * 8, [False, True] * 4])
    batch = [Rollouts(full[r:r + 1], lay, adv[r:r + 1], ce_mask[r:r + 1], valid[r:r + 1]) for r in (0, 1)]
    batch.append(Rollouts(full_short, short, adv_short, ce_short))
    loss, rl, ce = combine(policy_terms(model, batch), rl_coef, ce_coef)  # token means over all documents
    loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    terms, count = [], 0
    cases = [(docs[r], full[r], lay, adv[r], valid[r], ce_mask[r]) for r in (0, 1)]
    cases += [(docs[1, :9], full_short[i], short, adv_short[i], torch.ones(3, dtype=torch.bool), ce_short[i])
              for i in (0, 1)]
    for doc, seq, layout, a, ok, _ in cases:
        for b in range(layout.num_blocks):
            if not ok[b]:
                continue
            prefix = doc[: layout.anchor + b * layout.stride]
            block = seq[layout.generated()[b]]
            logp = torch.log_softmax(model(input_ids=torch.cat([prefix, block])[None]).logits[0], dim=-1)
            at = torch.arange(len(prefix) - 1, len(prefix) - 1 + layout.gen_len)
            terms.append(-(a[b] * logp[at, block]).sum())
            count += layout.gen_len
    rl_ref = torch.stack(terms).sum() / count
    ce_terms, ce_count = [], 0
    for doc, _, _, _, _, m in cases:
        logp = torch.log_softmax(model(input_ids=doc[None]).logits[0, :-1], dim=-1)
        ce_terms.append(-(logp.gather(-1, doc[1:, None])[:, 0] * m).sum())
        ce_count += int(m.sum())
    ce_ref = torch.stack(ce_terms).sum() / ce_count
    (rl_coef * rl_ref + ce_coef * ce_ref).backward()
    assert rl.item() == pytest.approx(rl_ref.item(), rel=1e-5)
    assert ce.item() == pytest.approx(ce_ref.item(), rel=1e-5)
    for name, param in model.named_parameters():
        assert torch.allclose(ours[name], param.grad, atol=1e-6, rtol=1e-4), name
