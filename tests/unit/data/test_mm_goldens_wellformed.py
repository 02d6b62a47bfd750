"""The Axolotl multimodal goldens (tests/data/golden/mm/) load, agree with themselves, and still match the
fixtures they were made from.

The goldens were produced by tests/data/axolotl/make_mm_goldens.py in Axolotl's venv from the folders of
tests/fixtures/tiny_mm.py. If a fixture change alters the tokenizer vocabulary, the processor settings, the
chat template or the test images, every parity test against these goldens would compare against stale data;
this module fails first and says to regenerate them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

np = pytest.importorskip("numpy")
pytest.importorskip("transformers")
pytest.importorskip("PIL")

from tests.fixtures.tiny_mm import FAMILIES, FAMILY_SPECS, build_tiny_vlm, make_test_images, vocab_hash  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden" / "mm"
REGENERATE = ("regenerate the goldens: AXOLOTL_DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 <axolotl venv>/bin/python "
              "tests/data/axolotl/make_mm_goldens.py")


def golden(family: str) -> tuple[dict, dict]:
    record = json.loads((GOLDEN / f"{family}.json").read_text(encoding="utf-8"))
    with np.load(GOLDEN / f"{family}.npz") as data:
        arrays = {key: data[key] for key in data.files}
    return record, arrays


@pytest.fixture(scope="module")
def processor_folders(tmp_path_factory):
    """Tokenizer + processor files of every family (no weights: the goldens never needed them)."""
    return {f: build_tiny_vlm(f, tmp_path_factory.mktemp(f"mm-golden-{f}"), with_model=False) for f in FAMILIES}


def test_every_family_has_goldens_and_they_stay_small():
    files = sorted(p.name for p in GOLDEN.iterdir() if p.suffix in (".json", ".npz"))
    assert files == sorted(f"{f}{ext}" for f in FAMILIES for ext in (".json", ".npz"))
    assert sum(p.stat().st_size for p in GOLDEN.iterdir()) < 1024 * 1024


@pytest.mark.parametrize("family", FAMILIES)
def test_fixture_still_builds_what_the_goldens_were_made_from(family, processor_folders, tmp_path):
    from transformers import AutoTokenizer

    record, _ = golden(family)
    folder = processor_folders[family]
    assert vocab_hash(AutoTokenizer.from_pretrained(folder)) == record["vocab_hash"], f"tokenizer changed: {REGENERATE}"
    files = record["fixture_files"]
    for name in ("preprocessor_config.json", "processor_config.json"):
        assert json.loads((folder / name).read_text()) == files[name], f"{name} changed: {REGENERATE}"
    template_sha = hashlib.sha256((folder / "chat_template.jinja").read_bytes()).hexdigest()
    assert template_sha == files["chat_template_sha256"], f"chat template changed: {REGENERATE}"
    images = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in make_test_images(tmp_path)}
    assert images == record["image_sha256"], f"test images changed: {REGENERATE}"


@pytest.mark.parametrize("family", FAMILIES)
def test_golden_tensors_are_consistent(family, processor_folders):
    """Shapes and dtypes as recorded; labels are input_ids or -100 and never train on padding or image
    placeholders; every image in the rows shows up in the pixel tensors and as placeholder tokens."""
    from transformers import AutoTokenizer

    record, arrays = golden(family)
    tok = AutoTokenizer.from_pretrained(processor_folders[family])
    spec = FAMILY_SPECS[family]
    pad_id = tok.convert_tokens_to_ids(spec.pad)
    expected_keys = {f"{case}/{name}" for case, c in record["cases"].items() for name in c["tensors"]}
    assert set(arrays) == expected_keys
    for case, c in record["cases"].items():
        t = {name: arrays[f"{case}/{name}"] for name in c["tensors"]}
        for name, meta in c["tensors"].items():
            assert list(t[name].shape) == meta["shape"] and str(t[name].dtype) == meta["dtype"], (case, name)
        ids, labels, mask = t["input_ids"], t["labels"], t["attention_mask"]
        assert ids.shape == labels.shape == mask.shape and len(c["rows"]) == ids.shape[0]
        assert ((labels == -100) | (labels == ids)).all()
        assert (labels[mask == 0] == -100).all() and (ids[mask == 0] == pad_id).all()
        image_id = c["how"]["image_token_id"]
        assert (labels[ids == image_id] == -100).all()
        assert 0 < (labels != -100).sum() < mask.sum()  # something is trained, not everything
        per_row = [_count_images(row) for row in c["rows"]]
        _check_images(family, tok, t, per_row)
        assert [tok.decode(row) for row in ids.tolist()] == c["decoded"]


def _count_images(row: dict) -> int:
    if row.get("images"):
        return len(row["images"])
    return sum(1 for m in row["messages"] if isinstance(m["content"], list)
               for part in m["content"] if part.get("type") == "image")


def _check_images(family: str, tok, t: dict, per_row: list[int]) -> None:
    ids, n_images = t["input_ids"], sum(per_row)
    if family == "qwen2_vl":  # each image: t*h*w patches, merged 2x2 into one <|image_pad|> each
        grid = t["image_grid_thw"]
        patches = int(grid.prod(axis=1).sum())
        assert grid.shape == (n_images, 3) and t["pixel_values"].shape == (patches, 3 * 2 * 14 * 14)
        assert int((ids == tok.convert_tokens_to_ids("<|image_pad|>")).sum()) == patches // 4
        assert (t["mm_token_type_ids"] == (ids == tok.convert_tokens_to_ids("<|image_pad|>"))).all()
    elif family == "mllama":  # one <|image|> per image; pixels [batch, max images, tiles, 3, 28, 28]
        per_row_tokens = (ids == tok.convert_tokens_to_ids("<|image|>")).sum(axis=1).tolist()
        assert per_row_tokens == per_row
        assert t["pixel_values"].shape == (len(per_row), max(per_row), 4, 3, 28, 28)
        assert ((t["aspect_ratio_ids"] > 0).sum(axis=1)).tolist() == per_row
    elif family == "gemma3":  # <start_of_image> + 4 soft tokens + <end_of_image> per image, 56 px
        assert t["pixel_values"].shape == (n_images, 3, 56, 56)
        assert int((ids == tok.convert_tokens_to_ids("<image_soft_token>")).sum()) == 4 * n_images
        assert int((ids == tok.convert_tokens_to_ids("<start_of_image>")).sum()) == n_images
        assert (t["token_type_ids"] == (ids == tok.convert_tokens_to_ids("<image_soft_token>"))).all()
    else:  # llava: 28 px crop, (28/14)^2 patches, CLS dropped
        assert t["pixel_values"].shape == (n_images, 3, 28, 28)
        assert int((ids == tok.convert_tokens_to_ids("<image>")).sum()) == 4 * n_images
