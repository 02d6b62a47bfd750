"""Multimodal batches equal Axolotl 0.19's, tensor for tensor (tests/data/golden/mm/, made by Axolotl's own
``MultiModalChatDataCollator`` on the same tiny processors and images): input_ids, labels, attention masks,
pixel values and every model-specific tensor (image_grid_thw, cross_attention_mask, aspect ratios, token types),
all bit-exact; the one allowance is an images-column picture Axolotl resized with Lanczos/bicubic under an
older Pillow, whose kernels changed (one 8-bit level in under 1% of the values).

Each case goes through mudpuppy's whole path: config validation, ``load_tokenizer``, ``load_processor``, the
up-front row checks of ``runtime.data.multimodal`` and ``build_mm_collator``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher.config import load_config_text

pytestmark = pytest.mark.timeout(300)
np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

from tests.fixtures.tiny_mm import FAMILIES  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden" / "mm"
AXOLOTL_PILLOW_MAJOR = 11  # the goldens' venv: Axolotl 0.19.0, transformers 5.16.1, Pillow 11.3.0
CASES = [(family, case) for family in FAMILIES
         for case in json.loads((GOLDEN / f"{family}.json").read_text())["cases"]]


def _resampled_by_another_pillow(record: dict) -> bool:
    import PIL

    algorithm = record["axolotl_config"].get("image_resize_algorithm")
    return algorithm in ("lanczos", "bicubic") and int(PIL.__version__.split(".")[0]) != AXOLOTL_PILLOW_MAJOR


def _absolute(value, images: Path):
    """The goldens name images by file name inside the make_test_images folder; Axolotl read absolute paths."""
    if isinstance(value, dict):
        out = {k: _absolute(v, images) for k, v in value.items()}
        if out.get("type") == "image" and isinstance(out.get("path"), str):
            out["path"] = str(images / out["path"])
        return out
    if isinstance(value, list):
        return [_absolute(v, images) for v in value]
    return value


@pytest.mark.parametrize(("family", "case"), CASES)
def test_batches_equal_axolotls(family: str, case: str, tiny_vlm, test_images, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mudpuppy.runtime.data import multimodal
    from mudpuppy.runtime.model.multimodal import load_processor
    from mudpuppy.runtime.tokenizer import load_tokenizer
    from mudpuppy.runtime.train.mm_collator import build_mm_collator

    monkeypatch.chdir(tmp_path)
    record = json.loads((GOLDEN / f"{family}.json").read_text())["cases"][case]
    images = test_images[0].parent
    rows = []
    for row in record["rows"]:
        row = _absolute(row, images)
        if "images" in row:
            row["images"] = [str(images / name) for name in row["images"]]
        rows.append(row)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg_data = {**record["axolotl_config"], "base_model": str(tiny_vlm(family)), "output_dir": str(tmp_path / "out"),
                "shuffle_merged_datasets": False}  # the goldens collate the rows in file order
    cfg = load_config_text(yaml.safe_dump(cfg_data)).config
    processor = load_processor(cfg, load_tokenizer(cfg))
    train, _, _ = multimodal.build(cfg, processor)
    batch = build_mm_collator(cfg, processor)([train[i] for i in range(len(train))])

    with np.load(GOLDEN / f"{family}.npz") as data:
        expected = {key.split("/", 1)[1]: data[key] for key in data.files if key.startswith(f"{case}/")}
    assert set(expected) <= set(batch), sorted(set(expected) - set(batch))
    for name, want in expected.items():
        got = batch[name].numpy()
        assert got.shape == want.shape and got.dtype == want.dtype, (name, got.shape, want.shape)
        if name == "pixel_values" and _resampled_by_another_pillow(record):
            # Pillow 12 changed its Lanczos/bicubic kernels: the column image Axolotl resized to image_size may
            # differ by one 8-bit level in a few pixels (the processor's own resize and all labels stay exact)
            level = 1 / 255 / min(processor.image_processor.image_std)
            assert np.abs(got - want).max() <= level * 1.001 and (got != want).mean() < 0.01, name
            continue
        assert np.array_equal(got, want), (name, int((got != want).sum()))
    assert (batch["labels"] != -100).any()
