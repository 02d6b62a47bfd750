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


def test_every_rendering_installs_exactly_the_locked_versions(tmp_path) -> None:
    """Image spec -> venv script, Dockerfile and Modal image all carry the lock's pins, transitive ones included.

    Expected versions come from constraints/lock.txt read with ``packaging`` (marker evaluation) and the lock's own
    ``# via`` lines, which uv wrote; the Dockerfile is read back with Docker's own parser."""
    import sys

    from packaging.markers import Marker
    from packaging.requirements import Requirement

    from mudpuppy.launcher.config.loader import load_config
    from mudpuppy.launcher.dockerfile import render_dockerfile
    from mudpuppy.launcher.image import image_spec
    from mudpuppy.launcher.lockfile import LOCK_PATH
    from tests.infra.tiny_bundle import tiny_config

    config = load_config(tiny_config(tmp_path, {"backend": "ssh", "volume": "s3://bucket/runs"},
                                     deepspeed="zero2")).config
    spec = image_spec(config, wheel="wheels/mudpuppy-0.1.0-py3-none-any.whl")
    python = spec["python"]
    env = {"python_version": python, "python_full_version": python + ".0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64"}
    locked = {}
    for line in LOCK_PATH.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                locked[req.name.lower()] = str(req.specifier)[2:]
    assert Marker("python_version >= '3.10'").evaluate(env)
    pins = dict(p.lower().split("==") for p in spec["packages"])
    assert {"torch", "transformers", "peft", "deepspeed", "s3fs", "fsspec", "aiobotocore", "botocore",
            "huggingface-hub", "numpy", "tokenizers", "safetensors"} <= set(pins)
    for name, version in pins.items():
        assert locked.get(name) == version, f"{name}=={version} in the image, lock has {locked.get(name)}"
    assert not {"pytest", "moto", "ray", "modal", "fabric", "mypy"} & set(pins)  # dev/launcher-only extras

    script = venv_setup_script(spec, "/b.tar.gz", "/v")
    assert all(shlex.quote(p) in script for p in spec["packages"])

    dockerfile = pytest.importorskip("dockerfile")
    text = render_dockerfile(spec, source="tiny.yml")
    installed = []
    for cmd in dockerfile.parse_string(text):
        if cmd.cmd.lower() == "run" and "pip install" in cmd.value[0] and "--no-deps" not in cmd.value[0]:
            words = shlex.split(cmd.value[0])
            installed += [w for w in words if "==" in w]
    assert sorted(installed) == sorted(spec["packages"])

    modal = pytest.importorskip("modal")
    from mudpuppy.backends import modal_app

    calls = []

    class Recorder:
        def __getattr__(self, name):
            def call(*args, **kwargs):
                calls.append((name, args))
                return self
            return call

    real = modal.Image
    modal.Image = Recorder()
    try:
        modal_app.build_image({"image": {**spec, "wheel": None}, "bundle_path": sys.executable,
                               "remote_bundle": "/b"})
    finally:
        modal.Image = real
    assert sorted(next(args for name, args in calls if name == "uv_pip_install")) == sorted(spec["packages"])
