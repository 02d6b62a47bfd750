"""``image.json``: the one runtime image spec every backend renders (venv script, Dockerfile, ...).

Packages are pinned from the install lock (``constraints/lock.txt``, see ``launcher.lockfile``): the runtime's
requirements and every transitive dependency at exactly the versions ``make`` installs here, so every rendering
(venv script, Dockerfile, Modal image, SkyPilot setup, Ray ``runtime_env``) gets the same set. Packages the lock
does not know (e.g. ``wandb``) are pinned to what is installed here. Local version labels (``+cpu``, ``+cu128``) are
dropped: the remote picks its own build.
Only secret *names* are recorded; values never leave the launching process's environment.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mudpuppy.launcher.errors import UserError

if TYPE_CHECKING:
    from mudpuppy.launcher.config.schema import Config

IMAGE_SCHEMA = 1
DEFAULT_BASE_IMAGE = "python:{python}-slim"
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_SECRETISH = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL)", re.I)
_FS_FOR_SCHEME = {"s3": "s3fs", "gs": "gcsfs"}
_EXTRA_FOR_KEY = {"deepspeed": "deepspeed", "wandb_project": "wandb", "mlflow_tracking_uri": "mlflow"}


def image_spec(config: Config, *, wheel: str | None) -> dict[str, Any]:
    launch = config.launch
    for name in launch.env:
        if _SECRETISH.search(name):
            raise UserError(
                f"launch.env.{name} looks like a secret; secrets are never written into bundles",
                hint=f"remove it from launch.env and add {name!r} to launch.secrets (the value is read from your "
                "environment at launch)",
            )
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    packages = pinned_packages(_extras_for(config), python=python)
    return {
        "schema": IMAGE_SCHEMA,
        "base_image": launch.image or DEFAULT_BASE_IMAGE.format(python=python),
        "python": python,
        "packages": packages,
        "wheel": wheel,
        "env": dict(sorted(launch.env.items())),
        "secrets": sorted(set(launch.secrets)),
    }


def _extras_for(config: Config) -> list[str]:
    names = []
    for key, package in _EXTRA_FOR_KEY.items():
        if getattr(config, key, None):
            names.append(package)
    # the runtime's volume sync reaches buckets through fsspec: the node needs the store's filesystem package
    for url in (config.launch.volume, config.launch.skypilot.bucket):
        fs_package = _FS_FOR_SCHEME.get(url.split("://", 1)[0].lower()) if url and "://" in url else None
        if fs_package:
            names.append(fs_package)
    return names


def pinned_packages(extra_packages: list[str], python: str | None = None) -> list[str]:
    """``name==version`` for the runtime extra of mudpuppy (plus ``extra_packages``) and, when the lock is
    present, all their dependencies as locked for ``python`` (default: this interpreter's) on Linux."""
    try:
        requires = metadata.requires("mudpuppy") or []
    except metadata.PackageNotFoundError:
        requires = []
    names = []
    for req in requires:
        if "extra" in req and 'extra == "runtime"' not in req:
            continue
        m = _REQ_NAME.match(req)
        if m:
            names.append(m.group(1))
    names.extend(extra_packages)
    from mudpuppy.launcher import lockfile

    if lockfile.load():
        python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
        names = lockfile.closure(sorted(set(names), key=str.lower), python)
    out = []
    for name in sorted(set(names), key=str.lower):
        if "==" in name:
            out.append(name)
            continue
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append(name)
            continue
        out.append(f"{name}=={version.split('+')[0]}")
    return out


def venv_setup_script(image: dict[str, Any], bundle: str, venv: str) -> str:
    """Shell that creates (or reuses) ``venv`` with the image's packages and the mudpuppy wheel in ``bundle``.

    ``bundle`` and ``venv`` are already shell-quoted paths. A ``.ready`` marker written last makes the step
    idempotent and safe to re-run after a half-finished try; the wheel is reinstalled whenever the bundle changes.
    """
    q = shlex.quote
    lines = [
        f"if [ ! -f {venv}/.ready ]; then",
        f"  echo '[mudpuppy] creating the venv' {venv}",
        f"  python{image['python']} -m venv {venv} 2>/dev/null || python3 -m venv {venv}",
        f"  {venv}/bin/python -m pip install --quiet --upgrade pip",
    ]
    if image.get("packages"):
        lines.append(f"  {venv}/bin/python -m pip install --quiet " + " ".join(q(p) for p in image["packages"]))
    lines += [f"  touch {venv}/.ready", "fi"]
    if image.get("wheel"):
        lines += [
            f"if [ \"$(cat {venv}/.bundle 2>/dev/null)\" != {bundle} ]; then",
            f"  echo '[mudpuppy] installing the mudpuppy wheel into' {venv}",
            '  wheel_tmp=$(mktemp -d)',
            f"  tar -xzf {bundle} -C \"$wheel_tmp\" {q(image['wheel'])}",
            f"  {venv}/bin/python -m pip install --quiet --no-deps --force-reinstall "
            f"\"$wheel_tmp\"/{q(image['wheel'])}",
            '  rm -rf "$wheel_tmp"',
            f"  echo {bundle} > {venv}/.bundle",
            "fi",
        ]
    return "\n".join(lines) + "\n"


def image_key(image: dict[str, Any]) -> str:
    """Venvs are shared by bundles with the same Python and packages (the wheel is reinstalled per bundle)."""
    text = image["python"] + "\n" + "\n".join(image.get("packages", []))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- the mudpuppy wheel

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
_SKIP_DIRS = {"tests", "bench", "scripts", ".venv", "build", "dist", "__pycache__", ".git", "outputs", ".demo"}


def package_sources() -> list[Path]:
    """The files that make up mudpuppy (what its wheel is built from), sorted."""
    out = []
    for path in sorted(_PACKAGE_ROOT.rglob("*")):
        rel = path.relative_to(_PACKAGE_ROOT)
        if any(part in _SKIP_DIRS or part.startswith(".") or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and not path.name.endswith((".pyc", ".pyo")):
            out.append(path)
    return out


def mudpuppy_wheel(cache_dir: Path) -> Path:
    """A wheel of the mudpuppy source tree, built once per source content and cached."""
    sources = package_sources()
    h = hashlib.sha256()
    for path in sources:
        h.update(path.relative_to(_PACKAGE_ROOT).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    key = h.hexdigest()[:16]
    out_dir = cache_dir / "wheels" / key
    found = sorted(out_dir.glob("mudpuppy-*.whl")) if out_dir.is_dir() else []
    if found:
        return found[0]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mudpuppy-wheel-") as tmp:
        src = Path(tmp) / "src"
        for path in sources:
            dest = src / path.relative_to(_PACKAGE_ROOT)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        built = Path(tmp) / "out"
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800", "PIP_NO_INPUT": "1"}
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(built)]
        proc = subprocess.run([*cmd, str(src)], capture_output=True, text=True, env=env, timeout=300, check=False)
        wheels = sorted(built.glob("mudpuppy-*.whl")) if built.is_dir() else []
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(f"building the mudpuppy wheel failed:\n{proc.stdout}\n{proc.stderr}")
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=out_dir.parent))
        shutil.copy2(wheels[0], staging / wheels[0].name)
        try:
            os.rename(staging, out_dir)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(out_dir.glob("mudpuppy-*.whl"))[0]
