from __future__ import annotations

import shlex
import subprocess

import pytest

from mudpuppy.launcher.image import image_key, pinned_packages, venv_setup_script

pytestmark = pytest.mark.timeout(300)


def test_pins_runtime_packages_without_local_labels() -> None:
    pins = pinned_packages([])
    torch = [p for p in pins if p.lower().startswith("torch==")]
    assert torch and "+" not in torch[0]
    assert any(p.startswith("transformers==") for p in pins)


def test_venv_script_is_valid_shell_and_idempotent_by_marker() -> None:
    image = {"python": "3.11", "packages": ["torch==2.13.0", "peft==0.21.2"], "wheel": "wheels/m.whl"}
    script = venv_setup_script(image, shlex.quote("/b/x.tar.gz"), shlex.quote("/v/env"))
    assert "pip install --quiet torch==2.13.0 peft==0.21.2" in script
    assert "/v/env/.ready" in script and "--no-deps" in script
    assert subprocess.run(["bash", "-n", "-c", script], check=False).returncode == 0


def test_image_key_ignores_env_but_not_packages() -> None:
    a = {"python": "3.11", "packages": ["a==1"], "env": {"X": "1"}}
    assert image_key(a) == image_key({**a, "env": {}})
    assert image_key(a) != image_key({**a, "packages": ["a==2"]})
