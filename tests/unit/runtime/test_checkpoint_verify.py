"""Resume only from a checkpoint whose bytes match its manifest; damaged ones are set aside, never trained over."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mudpuppy.launcher.config import load_config_text
from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.checkpoints import verified
from mudpuppy.runtime.checkpoints.manifest import MANIFEST_NAME, write_manifest
from mudpuppy.runtime.train.run import resume_checkpoint

pytestmark = pytest.mark.timeout(60)

BASE = "base_model: m\nlearning_rate: 1e-4\nauto_resume_from_checkpoints: true\ndatasets:\n  - path: d.jsonl\n" \
       "    type: alpaca\n"


def checkpoint(output_dir: Path, step: int) -> Path:
    path = output_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 8)
    write_manifest(path, step)
    return path


def flip_bit(path: Path) -> None:
    """One bit in the middle of the file: same size, so only sha256 can tell."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def cfg(extra: str = ""):
    return load_config_text(BASE + extra).config


def hidden(output_dir: Path) -> list[str]:
    return sorted(p.name.split(verified.CORRUPT_MARK)[0] for p in output_dir.iterdir() if p.name.startswith("."))


def test_bit_flip_in_newest_falls_back_to_previous_and_keeps_the_damaged_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint(tmp_path, 2)
    good = checkpoint(tmp_path, 4)
    bad = checkpoint(tmp_path, 6)
    flip_bit(bad / "adapter_model.safetensors")
    damaged = (bad / "adapter_model.safetensors").read_bytes()
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(cfg(), tmp_path, {}) == good
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "checkpoint-6 failed verification" in lines[0] and "adapter_model.safetensors" in lines[0]
    assert "resuming from checkpoint-4" in lines[0]
    assert not bad.exists() and hidden(tmp_path) == [".checkpoint-6"]
    kept = next(p for p in tmp_path.iterdir() if p.name.startswith(".checkpoint-6"))
    assert (kept / "adapter_model.safetensors").read_bytes() == damaged  # kept byte for byte


def test_truncated_manifest_is_a_warning_naming_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = checkpoint(tmp_path, 2)
    bad = checkpoint(tmp_path, 4)
    text = (bad / MANIFEST_NAME).read_text()
    (bad / MANIFEST_NAME).write_text(text[: len(text) // 2])
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(cfg(), tmp_path, {}) == good
    assert f"{bad / MANIFEST_NAME}: truncated or unreadable manifest" in caplog.text


def test_interrupted_save_without_manifest_is_skipped_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = checkpoint(tmp_path, 2)
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "adapter_model.safetensors").write_bytes(b"torn")
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(cfg(), tmp_path, {}) == good
    assert caplog.text == "" and (tmp_path / "checkpoint-4").is_dir()


@pytest.mark.parametrize("damage", ["flip", "truncate-manifest", "shorten"])
def test_no_verified_checkpoint_left_refuses_and_moves_nothing(tmp_path: Path, damage: str) -> None:
    bad = checkpoint(tmp_path, 4)
    weights = bad / "adapter_model.safetensors"
    if damage == "flip":
        flip_bit(weights)
    elif damage == "shorten":
        weights.write_bytes(weights.read_bytes()[:-1])
    else:
        (bad / MANIFEST_NAME).write_text("{")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(UserError) as caught:
        resume_checkpoint(cfg(), tmp_path, {})
    line = caught.value.one_line()
    assert "\n" not in line and "checkpoint-4" in line and "refusing to train from step 0" in line
    assert "move the damaged checkpoint-N folders" in line
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_other_ranks_choose_the_same_without_moving_anything(tmp_path: Path) -> None:
    good = checkpoint(tmp_path, 2)
    bad = checkpoint(tmp_path, 4)
    flip_bit(bad / "adapter_model.safetensors")
    assert resume_checkpoint(cfg(), tmp_path, {}, is_main=False) == good
    assert bad.is_dir()


def test_explicit_resume_from_checkpoint_is_verified(tmp_path: Path) -> None:
    good = checkpoint(tmp_path, 2)
    assert resume_checkpoint(cfg(f"resume_from_checkpoint: {good}\n"), tmp_path, {}) == good
    flip_bit(good / "adapter_model.safetensors")
    with pytest.raises(UserError, match=r"resume_from_checkpoint: .*checkpoint-2 failed verification: .*"
                                        r"adapter_model.safetensors: sha256 differs"):
        resume_checkpoint(cfg(f"resume_from_checkpoint: {good}\n"), tmp_path, {})
    assert good.is_dir()  # an explicit choice is never moved


def test_verification_is_hashed_once_per_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint(tmp_path, 2)
    calls: list[Path] = []
    real = verified.sha256_file
    monkeypatch.setattr(verified, "sha256_file", lambda p: calls.append(p) or real(p))
    verified.scan(tmp_path)
    verified.scan(tmp_path)
    assert len(calls) == 1


def test_explicit_checkpoint_from_elsewhere_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    foreign = tmp_path / "checkpoint-3"
    foreign.mkdir()
    (foreign / "trainer_state.json").write_text("{}")  # made by Axolotl or plain transformers: no manifest
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(cfg(f"resume_from_checkpoint: {foreign}\n"), tmp_path, {}) == foreign
    assert "without sha256 verification" in caplog.text
