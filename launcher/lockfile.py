"""Read ``constraints/lock.txt`` (written by scripts/lock.py): the pinned versions every environment installs.

The runtime image spec pins the remote's packages from here, so a Dockerfile, the Modal image, the SkyPilot setup,
the SSH/SLURM venv and a Ray ``runtime_env`` install exactly what ``make`` installs locally. The lock is universal
(environment markers on some lines); ``closure`` evaluates them for the target (Linux, the spec's Python) and walks
uv's ``# via`` annotations from the requested names to every transitive dependency, so the remote pip gets one
exact version per package and nothing to resolve.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

LOCK_PATH = Path(__file__).resolve().parents[1] / "constraints" / "lock.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*(?:;\s*(.+))?$")
_VIA = re.compile(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(\(.*\))?\s*$")


def normalize(name: str) -> str:
    """PEP 503 name normalisation (``Foo_Bar`` == ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: str | None
    parents: tuple[str, ...]  # normalised names of the packages that require this one ("mudpuppy" for top level)


def parse(text: str) -> dict[str, list[Pin]]:
    """Pins by normalised name; a name has several when its version differs by marker (e.g. numpy per Python)."""
    pins: dict[str, list[Pin]] = {}
    current: tuple[str, str, str | None] | None = None
    parents: list[str] = []

    def flush() -> None:
        if current:
            pins.setdefault(normalize(current[0]), []).append(Pin(current[0], current[1], current[2], tuple(parents)))

    for line in text.splitlines():
        m = _PIN.match(line)
        if m:
            flush()
            current, parents = (m.group(1), m.group(2), m.group(3)), []
            continue
        v = _VIA.match(line)
        if v and current and v.group(1) != "via":
            parents.append(normalize(v.group(1)))
    flush()
    return pins


@functools.cache
def load(path: Path = LOCK_PATH) -> dict[str, list[Pin]]:
    """The lock's pins by normalised name; empty when the file is absent (a source tree without constraints/)."""
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        return {}


def _applies(marker: str | None, python: str) -> bool:
    if not marker:
        return True
    from packaging.markers import Marker

    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    return Marker(marker).evaluate(env)


def pin_for(name: str, python: str, pins: dict[str, list[Pin]] | None = None) -> Pin | None:
    """The lock's entry for ``name`` on Linux with ``python`` (None: not locked, or not needed there)."""
    pins = load() if pins is None else pins
    return next((p for p in pins.get(normalize(name), []) if _applies(p.marker, python)), None)


def closure(names: list[str], python: str, pins: dict[str, list[Pin]] | None = None) -> list[str]:
    """``name==version`` for ``names`` and everything they pull in, per the lock, on Linux with ``python``.

    Names the lock does not know are returned as given (the caller pins them another way).
    """
    pins = load() if pins is None else pins
    target = {key: pin for key in pins if (pin := pin_for(key, python, pins)) is not None}
    wanted = {normalize(n) for n in names if normalize(n) in target}
    changed = True
    while changed:
        changed = False
        for key, pin in target.items():
            if key not in wanted and any(p in wanted for p in pin.parents):
                wanted.add(key)
                changed = True
    out = [f"{target[k].name}=={target[k].version}" for k in wanted]
    out += [n for n in names if normalize(n) not in pins]
    return sorted(out, key=str.lower)
