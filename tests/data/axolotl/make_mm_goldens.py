"""Record Axolotl's multimodal collator output on the tiny VLM fixtures (the oracle for mudpuppy's collator).

Run from the repository root in the Axolotl 0.19 venv (never imported by tests):

    AXOLOTL_DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 /work/axolotl-venv/bin/python tests/data/axolotl/make_mm_goldens.py

For each family in tests/fixtures/tiny_mm.py it builds the tiny model folder and the generated images, loads
the config the way ``axolotl train`` does (``validate_config`` + ``normalize_config``, ``load_tokenizer``,
``load_processor``), builds the collator exactly as Axolotl's trainer builder does for ``processor_type`` configs
(``get_processing_strategy`` + ``MultiModalChatDataCollator``; skip_prepare_dataset hands the raw rows to the
collator) and collates each case's rows as one batch. Outputs, in tests/data/golden/mm/:

    <family>.json  conversations (image paths relative to make_test_images' folder), config keys, the exact
                   calls, tokenizer vocabulary hash, tensor shapes/dtypes, decoded text of each row
    <family>.npz   the tensors, keyed "<case>/<name>" (input_ids, labels, attention_mask, pixel_values and
                   whatever else the processor returns: image_grid_thw, aspect_ratio_ids, token_type_ids, ...)
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "data" / "golden" / "mm"
# The repository root goes last: its top-level folders (kernels/, ...) must not shadow the venv's packages.
sys.path.append(str(ROOT))

os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SYSTEM = "You are a helpful assistant that describes images briefly."


def img(name: str) -> dict[str, str]:
    return {"type": "image", "path": name}


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def user(*parts: dict[str, str]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def assistant(value: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [text(value)]}


# Rows per case; every case is collated as one batch (rows of different lengths, so padding shows).
PARTS_ROWS: dict[str, list[dict[str, Any]]] = {
    # system message, one image, a second turn, multi-image turn
    "default": [
        {"messages": [user(img("red_blue.png"), text("What colour is the square?")),
                      assistant("A red square on a blue background.")]},
        {"messages": [{"role": "system", "content": [text(SYSTEM)]},
                      user(text("Compare the two images."), img("gradient.png"), img("checker.jpg")),
                      assistant("The first image is a grey gradient from dark to light."),
                      user(text("Anything else?")),
                      assistant("The picture shows a checkerboard.")]},
        {"messages": [user(img("gray.png"), text("Describe the image.")),
                      {"role": "assistant", "content": "A grey gradient."},
                      user(img("alpha.png"), text("What is in this picture?")),
                      assistant("A red square. Thanks!")]},
    ],
}
# Llama 3.2 Vision's template refuses a system message next to images, and writes today's date into the
# system block of image-less conversations; its rows all carry images and no system message.
MLLAMA_ROWS: list[dict[str, Any]] = [
    PARTS_ROWS["default"][0],
    {"messages": [user(text("Compare the two images."), img("gradient.png"), img("checker.jpg")),
                  assistant("The first image is a grey gradient from dark to light."),
                  user(text("Anything else?")),
                  assistant("The picture shows a checkerboard.")]},
    PARTS_ROWS["default"][2],
]
# The images-column layout: a bare {"type": "image"} placeholder filled from the row's "images" list, which
# is where Axolotl applies image_size / image_resize_algorithm.
COLUMN_ROWS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": [{"type": "image"}, text("Describe the image.")]},
                  {"role": "assistant", "content": "A grey gradient from dark to light."}],
     "images": ["gradient.png"]},
    {"messages": [{"role": "user", "content": "What colour is the square?"},
                  {"role": "assistant", "content": "A red square on a blue background."}],
     "images": ["red_blue.png"]},
]

# family -> case -> (rows, extra config keys)
CASES: dict[str, dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]] = {
    "qwen2_vl": {"default": (PARTS_ROWS["default"], {}),
                 "images_column": (COLUMN_ROWS, {"image_size": 40, "image_resize_algorithm": "bilinear"})},
    "mllama": {"default": (MLLAMA_ROWS, {}),
               "images_column": (COLUMN_ROWS, {"image_size": [36, 20], "image_resize_algorithm": "lanczos"})},
    "gemma3": {"default": (PARTS_ROWS["default"], {}),
               "images_column": (COLUMN_ROWS, {"image_size": 44, "image_resize_algorithm": "bicubic"})},
    "llava": {"default": (PARTS_ROWS["default"], {}),
              "images_column": (COLUMN_ROWS, {"image_size": 30, "image_resize_algorithm": "bilinear"})},
}


def resolve_paths(rows: list[dict[str, Any]], images: Path) -> list[dict[str, Any]]:
    """The rows with every image file name made absolute (what a dataset row holds after path resolution)."""
    rows = copy.deepcopy(rows)
    for row in rows:
        if "images" in row:
            row["images"] = [str(images / name) for name in row["images"]]
        for message in row["messages"]:
            if isinstance(message["content"], list):
                for part in message["content"]:
                    if "path" in part:
                        part["path"] = str(images / part["path"])
    return rows


def axolotl_config(family: str, folder: Path, extra: dict[str, Any]) -> dict[str, Any]:
    from tests.fixtures.tiny_mm import FAMILY_SPECS

    return {
        "base_model": str(folder),
        "processor_type": "AutoProcessor",
        "chat_template": FAMILY_SPECS[family].template,
        "skip_prepare_dataset": True,
        "remove_unused_columns": False,
        "sample_packing": False,
        "datasets": [{"path": "rows.jsonl", "type": "chat_template"}],
        "sequence_len": 1024,
        "micro_batch_size": 3,
        "num_epochs": 1,
        "learning_rate": 1e-4,
        "output_dir": str(folder / "out"),
        **extra,
    }


def collate(family: str, folder: Path, images: Path, rows: list[dict[str, Any]],
            extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Axolotl's collator output for ``rows`` and a description of how it was obtained."""
    from axolotl.loaders.processor import load_processor
    from axolotl.loaders.tokenizer import load_tokenizer
    from axolotl.processing_strategies import get_processing_strategy
    from axolotl.utils.chat_templates import get_chat_template_from_config
    from axolotl.utils.collators.mm_chat import MultiModalChatDataCollator
    from axolotl.utils.config import normalize_config, validate_config
    from axolotl.utils.dict import DictDefault

    from tests.fixtures.tiny_mm import load_processor as fixture_load_processor

    raw = axolotl_config(family, folder, extra)
    cfg = validate_config(DictDefault(copy.deepcopy(raw)))
    normalize_config(cfg)
    tokenizer = load_tokenizer(cfg)
    how = {"processor": "axolotl.loaders.processor.load_processor(cfg, tokenizer)"}
    try:
        processor = load_processor(cfg, tokenizer)
    except (ImportError, ValueError) as err:
        if "torchvision" not in str(err).lower():
            raise
        # Qwen2-VL's processor wants a torchvision video processor; none exists for CPU torch 2.13 here.
        # Same processor, built without it; then the tokenizer swap load_processor does.
        processor = fixture_load_processor(folder)
        processor.tokenizer = tokenizer
        how["processor"] = ("tests.fixtures.tiny_mm.load_processor(folder) (no torchvision: video_processor=None); "
                            "processor.tokenizer = load_tokenizer(cfg)")
    strategy = get_processing_strategy(
        processor,
        get_chat_template_from_config(cfg=cfg, tokenizer=tokenizer),
        cfg.chat_template,
        image_size=cfg.image_size,
        image_resize_algorithm=cfg.image_resize_algorithm,
        train_on_inputs=bool(cfg.train_on_inputs),
        roles_to_train=None,
        train_on_eos=None,
        role_boundaries_override=None,
        field_messages=None,
        model_type=cfg.model_config_type,
    )
    collator = MultiModalChatDataCollator(tokenizer=tokenizer, processing_strategy=strategy)
    batch = collator(resolve_paths(rows, images))
    how.update({
        "config": "validate_config(DictDefault(axolotl_config)); normalize_config(cfg); load_tokenizer(cfg)",
        "strategy": (f"get_processing_strategy(processor, get_chat_template_from_config(cfg, tokenizer), "
                     f"{str(getattr(cfg.chat_template, 'value', cfg.chat_template))!r}, image_size={cfg.image_size!r}, "
                     f"image_resize_algorithm={_resample(cfg.image_resize_algorithm)}, train_on_inputs=False, "
                     f"roles_to_train=None, train_on_eos=None, role_boundaries_override=None, "
                     f"field_messages=None, model_type={cfg.model_config_type!r})"),
        "strategy_class": type(strategy).__name__,
        "collator": "MultiModalChatDataCollator(tokenizer=tokenizer, processing_strategy=strategy)(rows)",
        "processor_class": type(processor).__name__,
        "image_processor_class": type(processor.image_processor).__name__,
        "image_token": strategy.image_token,
        "image_token_id": strategy.image_token_id,
        "padding_side": tokenizer.padding_side,
        "pad_token": tokenizer.pad_token,
    })
    # the temporary folder is written as "<folder>": the tiny model folder build_tiny_vlm made
    recorded = json.loads(json.dumps(raw).replace(json.dumps(str(folder))[1:-1], "<folder>"))
    return dict(batch), {"axolotl_config": recorded, "how": how, "tokenizer": tokenizer}


def fixture_files(folder: Path) -> dict[str, Any]:
    """The processor settings and template the goldens depend on, as the fixture wrote them."""
    return {
        "preprocessor_config.json": json.loads((folder / "preprocessor_config.json").read_text()),
        "processor_config.json": json.loads((folder / "processor_config.json").read_text()),
        "chat_template_sha256": hashlib.sha256((folder / "chat_template.jinja").read_bytes()).hexdigest(),
    }


def _resample(value: Any) -> str:
    return "None" if value is None else f"PIL.Image.Resampling.{value.name}"


def main() -> None:
    import axolotl
    import numpy as np
    import transformers

    from tests.fixtures.tiny_mm import build_tiny_vlm, make_test_images, vocab_hash

    OUT.mkdir(parents=True, exist_ok=True)
    families = sys.argv[1:] or list(CASES)
    with tempfile.TemporaryDirectory(prefix="mm-goldens-") as tmp:
        images = Path(tmp) / "images"
        image_files = make_test_images(images)
        for family in families:
            folder = build_tiny_vlm(family, Path(tmp) / family)
            record: dict[str, Any] = {
                "family": family,
                "axolotl_version": axolotl.__version__,
                "transformers_version": transformers.__version__,
                "command": "AXOLOTL_DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 /work/axolotl-venv/bin/python "
                           "tests/data/axolotl/make_mm_goldens.py",
                "fixture": f"tests.fixtures.tiny_mm.build_tiny_vlm({family!r}, folder)",
                "images": "tests.fixtures.tiny_mm.make_test_images(folder); paths below are relative to it",
                "image_files": [p.name for p in image_files],
                "image_sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in image_files},
                "fixture_files": fixture_files(folder),
                "cases": {},
            }
            arrays: dict[str, Any] = {}
            for case, (rows, extra) in CASES[family].items():
                batch, info = collate(family, folder, images, rows, extra)
                tokenizer = info.pop("tokenizer")
                record["vocab_hash"] = vocab_hash(tokenizer)
                tensors = {}
                for name, value in batch.items():
                    array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
                    arrays[f"{case}/{name}"] = array
                    tensors[name] = {"shape": list(array.shape), "dtype": str(array.dtype)}
                record["cases"][case] = {
                    "rows": rows,
                    **info,
                    "tensors": tensors,
                    "decoded": [tokenizer.decode(ids) for ids in batch["input_ids"].tolist()],
                }
                print(family, case, {k: tuple(v["shape"]) for k, v in tensors.items()})
            (OUT / f"{family}.json").write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n",
                                                encoding="utf-8")
            np.savez_compressed(OUT / f"{family}.npz", **arrays)


if __name__ == "__main__":
    main()
