"""Multimodal keys load as implemented options (no "unsupported" warning), packing is refused as Axolotl refuses
it, and every multimodal example config of an Axolotl checkout validates without a warning about these keys."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher.config import load_config, load_config_text
from mudpuppy.launcher.errors import ConfigError

pytestmark = pytest.mark.timeout(300)

MM_KEYS = ("processor_type", "processor_kwargs", "skip_prepare_dataset", "remove_unused_columns", "sample_packing",
           "image_size", "image_resize_algorithm", "freeze_mm_modules", "chat_template", "allow_remote_images",
           "max_image_pixels")
BASE = ("base_model: m\nlearning_rate: 1e-4\nprocessor_type: AutoProcessor\nskip_prepare_dataset: true\n"
        "remove_unused_columns: false\ndatasets:\n  - path: a.jsonl\n    type: chat_template\n")


@pytest.mark.parametrize("template", ["qwen2_vl", "llama3_2_vision", "gemma3", "gemma3n", "llava", "pixtral",
                                      "mistral_v7_tekken"])
def test_multimodal_keys_load_without_warnings(template: str) -> None:
    text = BASE + (f"chat_template: {template}\nsample_packing: false\nimage_size: 512\n"
                   "image_resize_algorithm: bilinear\nfreeze_mm_modules: true\nprocessor_kwargs: {use_fast: false}\n"
                   "allow_remote_images: true\nmax_image_pixels: 1000000\n")
    loaded = load_config_text(text)
    assert loaded.warnings == [] and loaded.unsupported == 0
    cfg = loaded.config
    assert (cfg.processor_type, cfg.image_size, cfg.image_resize_algorithm, cfg.freeze_mm_modules) == \
        ("AutoProcessor", 512, "bilinear", True)
    assert cfg.resolved_model_type() == "AutoModelForImageTextToText"
    assert load_config_text(BASE + "image_size: [640, 480]\n").config.image_size == (640, 480)
    assert load_config_text(BASE + "model_type: MllamaForConditionalGeneration\n").config.resolved_model_type() == \
        "MllamaForConditionalGeneration"


def test_packing_with_a_multimodal_model_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(BASE + "sample_packing: true\n")
    (line,) = info.value.lines()
    assert "sample_packing is not supported with multimodal models" in line and ":" in line.split(" ")[0]


@pytest.mark.parametrize(("extra", "needle"), [
    ("image_resize_algorithm: nearest\n", "image_resize_algorithm"),
    ("max_image_pixels: 0\n", "max_image_pixels"),
    ("dataset_exact_deduplication: true\n", "skip_prepare_dataset: true skips"),
])
def test_bad_multimodal_values_are_refused(extra: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(BASE + extra)
    assert any(needle in line for line in info.value.lines())


def _checkout_examples(tmp_path: Path) -> Path:
    checkout = os.environ.get("AXOLOTL_CHECKOUT")
    if not checkout:
        pytest.skip("set AXOLOTL_CHECKOUT to an Axolotl source tree or bare git dir")
    root = Path(checkout)
    if (root / "examples").is_dir():
        return root
    archive = subprocess.run(["git", "-C", str(root), "archive", "HEAD", "examples"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive, check=True)
    return tmp_path


@pytest.mark.axolotl_checkout
def test_axolotl_multimodal_examples_validate_without_warnings_for_these_keys(tmp_path: Path) -> None:
    root = _checkout_examples(tmp_path)
    found = []
    for path in sorted((root / "examples").rglob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and data.get("processor_type"):
            found.append(path)
    assert len(found) >= 20  # about one in eight of Axolotl's examples
    ok = 0
    for path in found:
        try:
            loaded = load_config(path)
        except ConfigError as exc:  # only what Axolotl itself rejects (e.g. output_dir: null)
            assert all(not any(f"{k}:" in line.split(" ", 1)[1] for k in MM_KEYS) for line in exc.lines()), path
            assert all("Input should be" in line for line in exc.lines()), (path, exc.lines())
            continue
        ok += 1
        about_mm = [w for w in loaded.warnings if any(f" {k} " in w or f" {k}:" in w for k in MM_KEYS)]
        assert about_mm == [], path
    assert ok >= len(found) - 2
