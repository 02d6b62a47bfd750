"""``mudpuppy image render``: golden Dockerfiles for a matrix of image specs, and the command end to end.

Regenerate the golden files after an intended change with ``MUDPUPPY_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mudpuppy.launcher.dockerfile import is_python_image, render_dockerfile
from mudpuppy.launcher.errors import UserError

pytestmark = pytest.mark.timeout(300)

GOLDEN = Path(__file__).parent / "golden"
SPEC = {"schema": 1, "base_image": "python:3.11-slim", "python": "3.11",
        "packages": ["accelerate==1.15.0", "deepspeed==0.17.1", "torch==2.13.0", "transformers==5.24.0",
                     "mudpuppy==0.1.0"],
        "wheel": "wheels/mudpuppy-0.1.0-py3-none-any.whl", "env": {}, "secrets": []}

MATRIX: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "python_slim": ({}, {}),
    "cuda_flash_attn": (
        {"base_image": "nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04", "env": {"NCCL_DEBUG": "INFO", "X": "a b"},
         "secrets": ["HF_TOKEN"]},
        {"flash_attn": True, "torch_index": "https://download.pytorch.org/whl/cu128"},
    ),
}


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_dockerfile_golden(case: str) -> None:
    spec_changes, options = MATRIX[case]
    text = render_dockerfile({**SPEC, **spec_changes}, source="cfg.yml", **options)
    golden = GOLDEN / f"Dockerfile.{case}"
    if os.environ.get("MUDPUPPY_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert "mudpuppy==" not in text  # the package comes from the copied wheel, never from an index


def test_flash_attn_needs_a_cuda_base() -> None:
    with pytest.raises(UserError, match="CUDA devel base image"):
        render_dockerfile(SPEC, source="cfg.yml", flash_attn=True)


def test_python_image_detection() -> None:
    assert is_python_image("python:3.11-slim") and is_python_image("docker.io/library/python:3.12")
    assert not is_python_image("nvidia/cuda:12.8.1-devel-ubuntu22.04") and not is_python_image("pytorch/pytorch:2")


def test_render_command_writes_the_build_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from mudpuppy.launcher import image
    from mudpuppy.launcher.cli import main
    from tests.infra.tiny_bundle import tiny_config

    wheel = tmp_path / "mudpuppy-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    monkeypatch.setattr(image, "mudpuppy_wheel", lambda cache: wheel)
    config = tiny_config(tmp_path / "cfg", {"image": "nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04"},
                         flash_attention=True)
    with pytest.raises(SystemExit) as done:
        main(["image", "render", str(config), "-o", str(tmp_path / "ctx")])
    assert done.value.code == 0
    text = (tmp_path / "ctx" / "Dockerfile").read_text()
    assert (tmp_path / "ctx" / wheel.name).read_bytes() == b"wheel"
    assert text.splitlines()[3] == "FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04"
    assert "pip install --no-build-isolation flash-attn" in text and f"COPY {wheel.name} " in text
    assert "docker build -t mudpuppy-runtime" in capsys.readouterr().err

    with pytest.raises(SystemExit) as done:  # the same config on a slim base cannot build flash-attn: one line
        main(["image", "render", str(config), "--base", "python:3.11-slim", "--stdout"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "CUDA devel base image" in err and err.count("\n") == 1
