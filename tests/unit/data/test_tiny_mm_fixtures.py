"""The tiny VLM fixtures load with the stock transformers classes and run a forward pass with an image.

Everything multimodal builds on these folders; a family whose processor expands the image placeholder into a
different number of tokens than its vision tower produces fails here, in transformers' own model code."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(180)

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")

from tests.fixtures.tiny_mm import FAMILIES, FAMILY_SPECS, load_processor, model_class  # noqa: E402


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_vlm_loads_and_trains_on_an_image(family, tiny_vlm, test_images):
    folder = tiny_vlm(family)
    processor = load_processor(folder)
    model = model_class(family).from_pretrained(folder)
    spec = FAMILY_SPECS[family]
    tok = processor.tokenizer
    for token in spec.specials:  # every special is one id, so templates' markers never split
        assert len(tok.encode(token, add_special_tokens=False)) == 1
        assert token == spec.unk or tok.convert_tokens_to_ids(token) != tok.unk_token_id
    assert tok.eos_token == spec.eos and tok.pad_token == spec.pad
    messages = [[{"role": "user", "content": [{"type": "image", "path": str(test_images[1])},
                                              {"type": "text", "text": "Describe the image."}]},
                 {"role": "assistant", "content": [{"type": "text", "text": "A grey gradient."}]}]]
    batch = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt",
                                          processor_kwargs={"padding": True})
    assert "pixel_values" in batch
    n_placeholders = int((batch["input_ids"] == model.config.image_token_id).sum())
    assert n_placeholders >= 1
    model.train()
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    vision = [p for n, p in model.named_parameters() if ("vision" in n or "visual" in n) and p.grad is not None]
    assert vision and any(float(p.grad.abs().sum()) > 0 for p in vision), "the image never reached the loss"


def test_test_images_are_deterministic(tmp_path, test_images):
    from tests.fixtures.tiny_mm import make_test_images

    again = make_test_images(tmp_path)
    assert [p.name for p in again] == [p.name for p in test_images]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(again, test_images, strict=True))
