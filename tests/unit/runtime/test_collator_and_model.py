import pytest
import torch
import yaml

from mudpuppy.launcher.config import load_config_text
from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.model import build_model
from mudpuppy.runtime.model.precision import Precision
from mudpuppy.runtime.train.collator import IGNORE_INDEX, REAL_TOKENS_KEY, Collator
from tests.fixtures.tiny import EXAMPLES

pytestmark = pytest.mark.timeout(300)

CPU = Precision(mode="fp32", tf32=False, device="cpu")


def cfg(**keys):
    doc = {"base_model": str(EXAMPLES / "tiny-llama"), "reinit_weights": True, "seed": 1, "learning_rate": 1e-3,
           "datasets": [{"path": "d.jsonl", "type": "alpaca"}], **keys}
    return load_config_text(yaml.safe_dump(doc)).config


def test_plain_rows_are_right_padded_and_masked():
    batch = Collator(pad_token_id=0, pad_to_multiple_of=4)([
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
        {"input_ids": [8], "attention_mask": [1], "labels": [8]},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100], [8, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert int(batch[REAL_TOKENS_KEY]) == 4


def test_packed_rows_restart_positions_mask_boundaries_and_drop_the_attention_mask():
    batch = Collator(pad_token_id=0, pad_to_length=8)([
        {"input_ids": [1, 2, 3, 4, 5], "labels": [1, 2, 3, 4, 5], "attention_mask": [1] * 5,
         "position_ids": [0, 1, 2, 0, 1], "seq_lens": [3, 2], "length": 5},
    ])
    assert "attention_mask" not in batch
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5] + [IGNORE_INDEX] * 3]
    assert int(batch[REAL_TOKENS_KEY]) == 5


def test_packed_batch_loss_and_logits_equal_the_samples_run_separately():
    model, _ = build_model(cfg(), None, CPU)  # training=True turns the KV cache off, as in training
    assert model.config.use_cache is False  # with a cache transformers ignores packed position_ids
    model.eval()
    a, b = [1, 40, 41, 42, 43], [1, 50, 51, 52]
    positions = [0, 1, 2, 3, 4, 0, 1, 2, 3]
    packed = Collator(pad_token_id=0)([{"input_ids": a + b, "labels": a + b, "position_ids": positions}])
    packed.pop(REAL_TOKENS_KEY)
    plain = Collator(pad_token_id=0)([{"input_ids": a, "labels": a}, {"input_ids": b, "labels": b}])
    plain.pop(REAL_TOKENS_KEY)
    with torch.no_grad():
        p_out = model(**packed)
        u_out = model(**plain)
    assert torch.allclose(p_out.logits[0, :5], u_out.logits[0, :5], atol=1e-5)
    assert torch.allclose(p_out.logits[0, 5:], u_out.logits[1, :4], atol=1e-5)
    assert torch.allclose(p_out.loss, u_out.loss, atol=1e-5)


def test_reinit_weights_is_seeded():
    one, _ = build_model(cfg(seed=3), None, CPU)
    two, _ = build_model(cfg(seed=3), None, CPU)
    three, _ = build_model(cfg(seed=4), None, CPU)
    w = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(one.state_dict()[w], two.state_dict()[w])
    assert not torch.equal(one.state_dict()[w], three.state_dict()[w])


def test_lora_target_linear_wraps_every_linear_but_the_head():
    model, _ = build_model(cfg(adapter="lora", lora_r=4, lora_target_linear=True, peft_use_rslora=True,
                               lora_modules_to_save=["lm_head"]), None, CPU)
    assert sorted(model.peft_config["default"].target_modules) == [
        "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert model.peft_config["default"].use_rslora
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "lm_head" in n for n in trainable)
    assert any("lm_head" in n for n in trainable)


def test_unfrozen_parameters_freeze_everything_else():
    model, _ = build_model(cfg(unfrozen_parameters=[r"model\.layers\.1\.mlp\..*"]), None, CPU)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("model.layers.1.mlp.") for n in trainable)
    with pytest.raises(UserError, match="no parameter name matches"):
        build_model(cfg(unfrozen_parameters=["nothing"]), None, CPU)


def test_overrides_of_model_config_reach_the_model():
    model, _ = build_model(cfg(overrides_of_model_config={"rope_scaling": {"type": "linear", "factor": 2.0}}),
                           None, CPU)
    assert model.config.rope_parameters["rope_type"] == "linear"
    assert model.config.rope_parameters["factor"] == 2.0


def test_quantised_loading_on_cpu_is_a_clear_one_line_skip():
    with pytest.raises(UserError) as info:
        build_model(cfg(adapter="qlora", lora_r=4, load_in_4bit=True, lora_target_linear=True), None, CPU)
    assert "needs a CUDA GPU" in info.value.one_line()


def test_missing_local_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_model(cfg(base_model=str(tmp_path / "nope"), reinit_weights=False), None, CPU)
