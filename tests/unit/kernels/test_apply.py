"""apply_kernels: config -> switches (incl. Axolotl plugin names), refusals, and the fused causal-LM loss."""

from __future__ import annotations

import copy

import pytest
import torch

from mudpuppy.kernels.apply import apply_kernels
from mudpuppy.kernels.causal_lm import causal_lm_reference_loss
from mudpuppy.kernels.switches import resolve_switches
from mudpuppy.launcher.config import load_config_text
from mudpuppy.launcher.errors import ConfigError, UserError
from tests.unit.kernels.conftest import lora_wrap, tiny_model

CCE = "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin"
LIGER = "axolotl.integrations.liger.LigerPlugin"


def test_plugins_map_onto_switches():
    assert resolve_switches({"plugins": [CCE]}).fused_linear_ce  # Axolotl's CCE args default to true
    assert not resolve_switches({"plugins": [CCE], "cut_cross_entropy": False}).fused_linear_ce
    sw = resolve_switches({"plugins": [LIGER], "liger_fused_linear_cross_entropy": True, "liger_rms_norm": True,
                           "liger_glu_activation": True})
    assert sw.fused_linear_ce and sw.rms_norm and sw.glu_activation and not sw.lora_mlp
    assert not resolve_switches({"plugins": [LIGER]}).any()
    assert resolve_switches({"chunked_cross_entropy": True}).fused_linear_ce


def test_config_loader_maps_known_plugins_warns_for_unrun_ones_and_rejects_others():
    base = ("base_model: x\nlearning_rate: 1.0e-4\nmicro_batch_size: 1\nnum_epochs: 1\n"
            "datasets:\n  - path: d.jsonl\n    type: alpaca\n")
    cfg = load_config_text(base + f"plugins:\n  - {CCE}\n  - {LIGER}\nliger_rms_norm: true\n").config
    assert resolve_switches(cfg).fused_linear_ce and resolve_switches(cfg).rms_norm
    loaded = load_config_text(base + "plugins:\n  - axolotl.integrations.spectrum.SpectrumPlugin\n")
    (line,) = loaded.warnings  # an Axolotl plugin mudpuppy does not run: one warning saying what won't happen
    assert "SpectrumPlugin is not run by mudpuppy: Spectrum's layer selection is not applied" in line
    with pytest.raises(ConfigError) as err:
        load_config_text(base + "plugins:\n  - my_pkg.MyPlugin\n")
    assert "not an Axolotl plugin" in str(err.value)


def test_nothing_asked_changes_nothing(tmp_path):
    model = tiny_model(tmp_path)
    forward = model.forward
    assert apply_kernels(model, {"adapter": "lora", "lora_mlp_kernel": False}) == []
    assert model.forward == forward


@pytest.mark.parametrize("cfg,needle", [
    ({"lora_mlp_kernel": True}, "need adapter: lora or qlora"),
    ({"adapter": "lora", "lora_qkv_kernel": True, "lora_dropout": 0.05}, "lora_dropout: 0 (got 0.05)"),
    ({"adapter": "qlora", "lora_o_kernel": True, "peft_use_dora": True}, "DoRA"),
    ({"adapter": "lora", "lora_mlp_kernel": True, "lora_fan_in_fan_out": True}, "fan_in_fan_out"),
])
def test_invalid_combinations_raise_one_line_user_error(tmp_path, cfg, needle):
    model = tiny_model(tmp_path)
    with pytest.raises(UserError) as err:
        apply_kernels(model, cfg)
    assert needle in str(err.value) and "\n" not in str(err.value) and ": false" in str(err.value)


def test_lora_kernel_without_lora_on_the_projections_says_what_to_do(tmp_path):
    model = lora_wrap(tiny_model(tmp_path), targets=["gate_proj"])
    with pytest.raises(UserError, match="lora_o_kernel: no LoRA adapter on o_proj"):
        apply_kernels(model, {"adapter": "lora", "lora_o_kernel": True})


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 1024, (3, 17), generator=g)
    labels = ids.clone()
    labels[:, :6] = -100
    labels[2, 10:] = -100
    return ids, labels


@pytest.mark.parametrize("num_items", [None, 23])
def test_fused_loss_matches_hf_loss_and_never_builds_logits(tmp_path, num_items):
    ref = tiny_model(tmp_path)
    fused = copy.deepcopy(ref)
    (line,) = apply_kernels(fused, {"plugins": [CCE]})
    assert line.startswith("kernel fused_linear_cross_entropy")
    ids, labels = _batch()
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    out_ref = ref(input_ids=ids, labels=labels, **kwargs)
    logits = ref(input_ids=ids).logits
    torch.testing.assert_close(out_ref.loss, causal_lm_reference_loss(logits, labels, kwargs.get("num_items_in_batch")))

    def no_logits(*_a, **_k):
        raise AssertionError("lm_head called: logits materialised")

    fused.lm_head.forward = no_logits
    out = fused(input_ids=ids, labels=labels, **kwargs)
    assert out.logits is None
    torch.testing.assert_close(out.loss, out_ref.loss)
    out.loss.backward()
    out_ref.loss.backward()
    ref_p = dict(ref.named_parameters())
    for name, p in fused.named_parameters():  # full fine-tune: the LM head trains too
        torch.testing.assert_close(p.grad, ref_p[name].grad, rtol=1e-5, atol=1e-6, msg=name)


def test_fused_loss_honours_shift_labels_and_leaves_generation_alone(tmp_path):
    ref = tiny_model(tmp_path)
    fused = copy.deepcopy(ref)
    apply_kernels(fused, {"liger_fused_linear_cross_entropy": True})
    ids, labels = _batch()
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
    torch.testing.assert_close(fused(input_ids=ids, shift_labels=shifted).loss,
                               ref(input_ids=ids, labels=labels).loss)
    torch.testing.assert_close(fused(input_ids=ids).logits, ref(input_ids=ids).logits)
    gen = fused.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)
    torch.testing.assert_close(gen, ref.generate(ids[:1, :4], max_new_tokens=3, do_sample=False))


def test_fused_loss_keeps_trainer_loss_kwargs_detection(tmp_path):
    import inspect

    model = tiny_model(tmp_path)
    apply_kernels(model, {"cut_cross_entropy": True})
    params = inspect.signature(model.forward).parameters.values()
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    assert apply_kernels(model, {"cut_cross_entropy": True})[0].endswith("already on LlamaForCausalLM")


def test_softcap_model_uses_capped_loss(tmp_path):
    """A model config with final_logit_softcapping gets the capped loss (Gemma-style)."""
    from mudpuppy.kernels.linear_ce import linear_cross_entropy_reference

    model = tiny_model(tmp_path)
    model.config.final_logit_softcapping = 3.0
    apply_kernels(model, {"cut_cross_entropy": True})
    ids, labels = _batch()
    hidden = model.model(input_ids=ids).last_hidden_state
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
    want = linear_cross_entropy_reference(hidden, model.lm_head.weight, shifted, softcap=3.0)
    torch.testing.assert_close(model(input_ids=ids, labels=labels).loss, want)


def test_model_with_logit_scale_is_refused(tmp_path):
    model = tiny_model(tmp_path)
    model.config.logit_scale = 0.5
    with pytest.raises(UserError, match="logit_scale"):
        apply_kernels(model, {"cut_cross_entropy": True})


def test_chunked_cross_entropy_num_chunks_splits_each_batch(tmp_path, monkeypatch):
    import mudpuppy.kernels.causal_lm as causal_lm

    ref = tiny_model(tmp_path)
    fused = copy.deepcopy(ref)
    seen = []
    real = causal_lm.linear_cross_entropy

    def spy(*args, **kwargs):
        seen.append(kwargs["chunk_tokens"])
        return real(*args, **kwargs)

    monkeypatch.setattr(causal_lm, "linear_cross_entropy", spy)
    (line,) = apply_kernels(fused, {"chunked_cross_entropy": True, "chunked_cross_entropy_num_chunks": 4})
    assert "1/4 of the batch" in line
    ids, labels = _batch()  # 3 x 17 = 51 tokens -> chunks of 13
    loss = fused(input_ids=ids, labels=labels).loss
    assert seen == [13]
    torch.testing.assert_close(loss, causal_lm_reference_loss(ref(input_ids=ids).logits, labels))
