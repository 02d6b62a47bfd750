"""Multimodal rows before training: shapes normalised as Axolotl normalises them, and every bad media reference
(missing file, not an image, too many pixels, a remote URL nobody allowed, audio the processor cannot take) is
one line naming the dataset file and row, or the row is skipped with ``skip_invalid_rows``."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mudpuppy.launcher.config import load_config_text
from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data import multimodal

pytestmark = pytest.mark.timeout(120)
PROCESSOR = SimpleNamespace(feature_extractor=None)  # only what the row checks read: no audio


def _png(path: Path, size: tuple[int, int] = (8, 6)) -> Path:
    from PIL import Image

    Image.new("RGB", size, (200, 10, 10)).save(path)
    return path


def _huge_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (only the header is ever read, so nothing huge is allocated)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    path.write_bytes(data + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))
    return path


def _row(image: dict[str, Any], text: str = "Describe the image.") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "image", **image}, {"type": "text", "text": text}]},
                         {"role": "assistant", "content": "A red square."}]}


def _build(tmp_path: Path, rows: list[dict[str, Any]], extra: str = "") -> Any:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config_text(f"base_model: m\nlearning_rate: 1e-4\nprocessor_type: AutoProcessor\nchat_template: gemma3\n"
                           f"datasets:\n  - path: {data}\n    type: chat_template\n{extra}").config
    return multimodal.build(cfg, PROCESSOR)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative image paths resolve against the working folder, as in Axolotl
    (tmp_path / "images").mkdir()


def test_rows_are_normalised_and_paths_resolved(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "red.png")
    encoded = base64.b64encode((_png(tmp_path / "b.png")).read_bytes()).decode()
    rows = [_row({"path": "images/red.png"}), _row({"base64": encoded}),
            {"conversations": [{"from": "human", "value": "Hi <image>"}, {"from": "gpt", "value": "Hello"}],
             "images": ["images/red.png"]},
            {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
                          {"role": "assistant", "content": "Red."}], "image": "images/red.png"}]
    train, evaluation, stats = _build(tmp_path, rows, "shuffle_merged_datasets: false\n")
    assert evaluation is None and stats.train_rows == 4
    first, second, legacy, placeholder = (json.loads(r) for r in train[multimodal.ROW_COLUMN])
    assert first[0]["content"][0] == {"type": "image", "path": str(tmp_path / "images" / "red.png")}
    assert first[1] == {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]}
    assert second[0]["content"][0] == {"type": "image", "base64": encoded}
    # ShareGPT rows: roles mapped, the column image appended to the first user turn, marked for image_size
    assert [m["role"] for m in legacy] == ["user", "assistant"]
    assert legacy[0]["content"][-1] == {"type": "image", "path": str(tmp_path / "images" / "red.png"),
                                        "resize": True}
    # a bare {"type": "image"} placeholder is filled in place
    assert placeholder[0]["content"][0] == {"type": "image", "path": str(tmp_path / "images" / "red.png"),
                                            "resize": True}
    assert train[multimodal.WHERE_COLUMN][2].endswith("data.jsonl: row 2")


@pytest.mark.parametrize(("make", "needle"), [
    (lambda d: {"path": "images/missing.png"}, "image file images/missing.png does not exist"),
    (lambda d: {"path": str(_text_file(d / "images" / "notes.png"))}, "is not an image PIL can read"),
    (lambda d: {"path": str(_huge_png(d / "images" / "bomb.png", 20000, 20000))},
     "is 20000x20000 = 400,000,000 pixels, over max_image_pixels 40,000,000"),
    (lambda d: {"url": "https://example.com/cat.png"}, "set allow_remote_images: true"),
    (lambda d: {"base64": "bm90IGFuIGltYWdlIGF0IGFsbA=="}, "the base64 image is not an image"),
    (lambda d: {"image": "images/typo.png"}, "image file images/typo.png does not exist"),
])
def test_a_bad_image_is_one_line_naming_file_and_row(tmp_path: Path, make: Any, needle: str) -> None:
    _png(tmp_path / "images" / "ok.png")
    rows = [_row({"path": "images/ok.png"}), _row(make(tmp_path))]
    with pytest.raises(UserError) as info:
        _build(tmp_path, rows)
    line = info.value.one_line()
    assert "\n" not in line and f"{tmp_path / 'data.jsonl'}: row 1: field 'messages[0].content[0]': " in line
    assert needle in line, line


def _text_file(path: Path) -> Path:
    path.write_text("not a picture\n")
    return path


def test_max_image_pixels_is_the_cap(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "ok.png", (8, 6))
    with pytest.raises(UserError, match="8x6 = 48 pixels, over max_image_pixels 47"):
        _build(tmp_path, [_row({"path": "images/ok.png"})], "max_image_pixels: 47\n")
    assert _build(tmp_path, [_row({"path": "images/ok.png"})], "max_image_pixels: 48\n")[2].train_rows == 1


def test_skip_invalid_rows_drops_bad_rows_and_counts_them(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "ok.png")
    rows = [_row({"path": "images/ok.png"}), _row({"path": "images/gone.png"}), _row({"url": "http://x/y.png"}),
            {"messages": "not a list"}, _row({"path": "images/ok.png"}, "Again.")]
    train, _, stats = _build(tmp_path, rows, "skip_invalid_rows: true\n")
    assert stats.skipped_invalid == 3 and len(train) == 2
    assert sorted(w.rsplit(" ", 1)[1] for w in train[multimodal.WHERE_COLUMN]) == ["0", "4"]
    with pytest.raises(UserError, match="no training rows left"):
        _build(tmp_path, rows[1:4], "skip_invalid_rows: true\n")


def test_remote_urls_pass_when_allowed(tmp_path: Path) -> None:
    train, _, _ = _build(tmp_path, [_row({"url": "https://example.com/cat.png"})], "allow_remote_images: true\n")
    assert json.loads(train[0][multimodal.ROW_COLUMN])[0]["content"][0] == {"type": "image",
                                                                           "url": "https://example.com/cat.png"}


def test_audio_parts_are_refused_when_the_processor_takes_no_audio(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    row = {"messages": [{"role": "user", "content": [{"type": "audio", "path": "a.wav"}]},
                        {"role": "assistant", "content": "Birdsong."}]}
    with pytest.raises(UserError) as info:
        _build(tmp_path, [row])
    assert "row 0: field 'messages[0].content[0]': is an audio part, but this model's processor takes no audio" in \
        info.value.one_line()
